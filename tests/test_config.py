import re
import subprocess
import sys
from pathlib import Path

import pytest

from hisguard.agent.config import load_config
from hisguard.tomlconfig import ConfigError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[agent]
name = "his-db-01"
hospital_critical = true

[server]
url = "http://127.0.0.1:8470"
token = "hga_x"

[[probe.ping]]
interval = 2
timeout = 1
targets = [
  { address = "127.0.0.1", name = "核心交换机", hospital_critical = true },
  { address = "127.0.0.2", department = "门诊收费" },
]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_is_valid():
    cfg = load_config(ROOT / "config.example.toml")
    assert {j.spec.name for j in cfg.jobs} == {"host", "ping"}
    assert cfg.agent.state_dir.is_absolute()


def test_good_config_loads_typed_objects(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    (job,) = cfg.jobs
    assert job.name == "ping" and job.config.interval == 2
    assert job.config.targets[0].hospital_critical and job.config.targets[1].department == "门诊收费"
    assert cfg.token == "hga_x"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("interval = 2", 'interval = "often"'), ":11: probe.ping[0].interval: Input should be a valid number"),
        (("timeout = 1", "timeout = 1\ncount = 0"), ":13: probe.ping[0].count: Input should be greater than or equal"),
        (('name = "his-db-01"', 'nmae = "his-db-01"'), ":3: agent.nmae: unknown key"),
        (('url = "http://127.0.0.1:8470"', 'url = "ftp://x"'), ":7: server.url: String should match pattern"),
        (('token = "hga_x"', ""), "server: Value error, give exactly one of token"),
        (("timeout = 1", "timeout = 5"), ":10: probe.ping[0]: Value error, timeout (5.0s) must not exceed interval"),
        (("[[probe.ping]]", "[[probe.pnig]]"), "probe.pnig: unknown probe (known:"),
    ],
)
def test_broken_config_names_key_and_line(tmp_path, edit, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD.replace(*edit, 1)))
    # file:line: key: what is wrong in Chinese / in English
    key, said = re.match(r"(.*?[a-z\]]): ([A-Z].*|unknown.*)", expected).groups()
    assert re.search(re.escape(key) + r": (\S.* / )?" + re.escape(said), str(err.value)), str(err.value)


def test_toml_syntax_error_gives_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line 3"):
        load_config(write(tmp_path, '[agent]\nname = "x"\nhospital_critical = tru\n'))


def test_inline_table_error_points_at_its_key(tmp_path):
    bad = GOOD.replace('{ address = "127.0.0.2", department = "门诊收费" }', '{ address = "127.0.0.2", dept = "x" }')
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    assert ":15: probe.ping[0].targets[1].dept: 未知的键（拼写错误？） / unknown key" in str(err.value)


def test_check_config_cli_exits_2_with_the_key(tmp_path):
    path = write(tmp_path, GOOD.replace("interval = 2", "interval = -1"))
    out = subprocess.run(
        [sys.executable, "-m", "hisguard.agent.cli", "check-config", "-c", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "probe.ping[0].interval" in out.stderr and f"{path}:11" in out.stderr


def test_check_config_cli_ok(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hisguard.agent.cli", "check-config", "-c", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "1 probe jobs" in out.stdout


def test_missing_token_env_is_a_config_error(tmp_path):
    path = write(tmp_path, GOOD.replace('token = "hga_x"', 'token_env = "HG_NO_SUCH_VAR"'))
    out = subprocess.run(
        [sys.executable, "-m", "hisguard.agent.cli", "check-config", "-c", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "HG_NO_SUCH_VAR" in out.stderr


def test_agent_role_reaches_probes_that_have_one_unless_they_set_their_own(tmp_path):
    text = GOOD.replace("hospital_critical = true", 'hospital_critical = true\nrole = "db_server"', 1) + (
        f'\n[[probe.canary]]\nname = "c1"\nfolders = ["{tmp_path}"]\n'
        f'[[probe.canary]]\nname = "c2"\nrole = "workstation"\nfolders = ["{tmp_path}"]\n'
    )
    cfg = load_config(write(tmp_path, text))
    roles = {j.name: getattr(j.config, "role", None) for j in cfg.jobs}
    assert roles == {"ping": None, "c1": "db_server", "c2": "workstation"}
