"""Service targets as a hospital writes them: bad URLs, unknown schemes, ports out of range and options for the
wrong protocol are refused by `hisguard-agent check-config`, naming the key and its line; nothing is lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from hisguard.agent.config import load_config
from hisguard.checks.service import config as service_config
from hisguard.checks.service.config import Config, parse_url
from hisguard.tomlconfig import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HEAD = """[agent]
name = "his-app-01"

[server]
url = "http://127.0.0.1:8470"
token = "x"

[[probe.service]]
name = "his"
targets = [
  { url = "http://10.0.0.8:8080/his/health", name = "HIS 应用服务", hospital_critical = true },
"""


def write(tmp_path: Path, *target_lines: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + "".join(f"  {line}\n" for line in target_lines) + "]\n", encoding="utf-8")
    return path


def check_config(tmp_path: Path, *target_lines: str) -> tuple[int, str]:
    """`hisguard-agent check-config` as a person runs it."""
    cmd = [sys.executable, "-m", "hisguard.agent.cli", "check-config", "-c", str(write(tmp_path, *target_lines))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def problems(tmp_path: Path, *target_lines: str) -> str:
    """What check-config prints, from the loader it calls (in this process: many cases, one interpreter)."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, *target_lines))
    return str(caught.value)


@pytest.mark.parametrize(
    ("line", "key", "says"),
    [
        ('{ url = "http//10.0.0.8/health" },', "url", "is not a URL"),
        ('{ url = "10.0.0.8:8080" },', "url", "is not a URL"),
        ('{ url = "ftp://10.0.0.9/" },', "url", "unknown scheme 'ftp' (known: tcp://, http://"),
        ('{ url = "gopher://10.0.0.9:70" },', "url", "unknown scheme 'gopher'"),
        ('{ url = "mllp://10.0.0.30:70000", name = "LIS" },', "url", "port '70000' is out of range (1–65535)"),
        ('{ url = "tcp://10.0.0.8:0" },', "url", "port 0 is out of range"),
        ('{ url = "http://10.0.0.8:80x/" },', "url", "out of range (1–65535) or not a number"),
        ('{ url = "tcp://10.0.0.8" },', "url", "tcp:// needs a port"),
        ('{ url = "http:///health" },', "url", "names no host"),
        ('{ url = "http://10.0.0.8/a b" },', "url", "spaces or control characters"),
        ('{ url = "http://admin:pw@10.0.0.8/" },', "url", "credentials do not belong in a http:// URL (give auth_file"),
        ('{ url = "dicom://10.0.0.20:104" },', "url", "dicom:// needs the called AE title"),
        ('{ url = "dicom://A_TITLE_LONGER_THAN_16@10.0.0.20" },', "url", "called AE title"),
        ('{ url = "dns://10.0.0.2" },', "url", "dns:// needs the name to resolve"),
        ('{ url = "dns://dns.hospital/his.hospital.local" },', "url", "the server must be an IP address"),
        ('{ url = "mllp://10.0.0.30:2575/path" },', "url", "takes no path"),
        ('{ url = "tcp://10.0.0.8:1433", body = "UP" },', "body", "only for http://, https:// targets, not tcp://"),
        ('{ url = "http://10.0.0.8/", calling_ae = "HIS" },', "calling_ae", "only for dicom:// targets"),
        ('{ url = "https://10.0.0.8/", status = [200, "6xx"] },', "status", "give a code (200) or a class"),
        ('{ url = "https://10.0.0.8/", status = [999] },', "status", "is not an HTTP status"),
        ('{ url = "https://10.0.0.8/", body = "([" },', "body", "not a regular expression"),
        ('{ url = "https://10.0.0.8/", headers = { "Bad Name" = "x" } },', "headers", "not a valid header name"),
        ('{ url = "mllp://10.0.0.30:2575", encoding = "klingon" },', "encoding", "unknown character set"),
        ('{ url = "mllp://10.0.0.30:2575", message = "PID|1" },', "message", "starts with its MSH segment"),
        ('{ url = "dicom://PACS@10.0.0.20", calling_ae = "A\\\\B" },', "calling_ae", "no backslash"),
        ('{ url = "http://10.0.0.8/", timeout = -1 },', "timeout", "greater than 0"),
        ('{ url = "http://10.0.0.8/", nmae = "HIS" },', "nmae", "unknown key"),
    ],
)
def test_bad_target_is_refused_naming_key_and_line(tmp_path: Path, line: str, key: str, says: str) -> None:
    out = problems(tmp_path, line)
    assert re.search(rf"agent\.toml:12: probe\.service\[0\]\.targets\[1\]\.{key}: .*{re.escape(says)}", out), out


def test_check_config_names_each_bad_url_and_its_line(tmp_path: Path) -> None:
    rc, out = check_config(
        tmp_path,
        '{ url = "http//10.0.0.8/health", name = "HIS" },',
        '{ url = "ftp://10.0.0.9/" },',
        '{ url = "tcp://10.0.0.8:99999" },',
        '{ url = "http://10.0.0.8/" },',
    )
    assert rc == 2
    lines = out.splitlines()
    assert lines[0] == "配置错误 / configuration error:"
    assert re.search(r"agent\.toml:12: probe\.service\[0\]\.targets\[1\]\.url: .*is not a URL", lines[1])
    assert re.search(r"agent\.toml:13: probe\.service\[0\]\.targets\[2\]\.url: .*unknown scheme 'ftp'", lines[2])
    assert re.search(
        r"agent\.toml:14: probe\.service\[0\]\.targets\[3\]\.url: .*port '99999' is out of range", lines[3]
    )
    assert len(lines) == 4  # the good target is not blamed


def test_a_good_configuration_passes(tmp_path: Path) -> None:
    rc, out = check_config(
        tmp_path,
        '{ url = "https://his.hospital.local/api/ping", status = [200, "3xx"], body = "UP", slow_ms = 800 },',
        '{ url = "tls://10.0.0.8:443", server_name = "his.hospital.local" },',
        '{ url = "tcp://[fd00::8]:1433", name = "SQL Server" },',
        '{ url = "dns://10.0.0.2/his.hospital.local", answers = ["10.0.0.8"] },',
        '{ url = "mllp://10.0.0.30:2575", name = "LIS 接口", department = "检验科" },',
        '{ url = "dicom://PACS@10.0.0.20", departments = ["医技检查", "放射科"] },',
    )
    assert rc == 0, out
    assert re.search(r"his              service    .*every 30s, timeout 15s", out), out


def test_listing_the_same_url_twice_is_refused(tmp_path: Path) -> None:
    out = problems(tmp_path, '{ url = "http://10.0.0.8:8080/his/health" },')
    said = "取值无效 / Value error, target http://10.0.0.8:8080/his/health is listed twice"
    assert f"probe.service[0].targets: {said}" in out


def test_targets_that_cannot_fit_in_the_timeout_are_refused() -> None:
    targets = [{"url": f"http://10.0.0.8/{i}"} for i in range(300)]
    with pytest.raises(ValueError, match="300 targets, 64 at a time, 5s each do not fit in timeout"):
        Config(targets=targets, timeout=10, target_timeout=5)
    cfg = Config(targets=targets, timeout=15, concurrency=100)  # no target_timeout: what fits (3 waves in 13.5 s)
    assert cfg.target_timeout == pytest.approx(4.5)
    assert Config(targets=targets[:5]).target_timeout == 5.0


def test_a_protocol_whose_package_is_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = service_config.importlib.util.find_spec
    monkeypatch.setattr(
        service_config.importlib.util, "find_spec", lambda name, *a: None if name == "pynetdicom" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"dicom:// needs the pynetdicom package: pip install 'hisguard\[service\]'"):
        Config(targets=[{"url": "dicom://PACS@10.0.0.20"}])


def test_endpoints_are_read_from_the_url() -> None:
    assert parse_url("dicom://PACS@10.0.0.20").port == 104
    assert parse_url("dicom://PACS@10.0.0.20:11112").user == "PACS"
    assert parse_url("https://his.hospital.local/api?x=1").path == "/api?x=1"
    assert parse_url("dns://10.0.0.2/his.hospital.local").path == "his.hospital.local"
    assert parse_url("tcp://[fd00::8]:1433").address == "[fd00::8]:1433"
    assert parse_url("mllp://10.0.0.30").port == 2575


def test_the_example_in_config_example_toml_loads(tmp_path: Path) -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    start = text.index("# [[probe.service]]")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break
        body = line[2:]
        if re.match(r"^(\[|[A-Za-z_]+ = |  \{|\])", body):  # TOML lines, not the prose between them
            block.append(body)
    path = tmp_path / "agent.toml"
    path.write_text('[server]\nurl = "http://127.0.0.1:8470"\ntoken = "x"\n\n' + "\n".join(block) + "\n", "utf-8")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise AssertionError(f"{exc}\n---\n{path.read_text()}") from None
    (job,) = cfg.jobs
    schemes = {t.endpoint.scheme for t in job.config.targets}
    assert schemes == {"http", "https", "tls", "tcp", "dns", "mllp", "dicom"}
    assert any(t.hospital_critical for t in job.config.targets)
