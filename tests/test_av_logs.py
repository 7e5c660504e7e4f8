"""Following antivirus logs: GBK text, rotation, truncation and agent restarts lose nothing and repeat nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hisguard.checks import antivirus, logtail
from hisguard.checks.base import ProbeContext

DATA = Path(__file__).parent / "data" / "avlogs"
PATTERN = (DATA / "pattern.txt").read_text(encoding="utf-8").strip()
ACTIONS = {"已隔离": "quarantined", "已删除": "removed", "处理失败": "failed"}


def line(n: int, action: str = "已隔离") -> bytes:
    return (
        f"2026-11-27 10:{n // 60:02d}:{n % 60:02d} [实时防护] 发现病毒 病毒名:Trojan.Win32.Agent.{n} "
        f"文件:C:\\Users\\护士站\\桌面\\报表{n}.exe 处理结果:{action}\r\n"
    ).encode("gbk")


def noise(n: int) -> bytes:
    return f"2026-11-27 10:00:{n % 60:02d} [系统] 病毒库升级成功 版本:2026.11.27.{n:02d}\r\n".encode("gbk")


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


class Reader:
    """Follows a file like the probe does, keeping the position as the probe's saved state would."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.seen = path, None, []

    def read(self) -> list[bytes]:
        res = logtail.read_new(self.path, self.pos)
        self.pos = logtail.Position.from_dict(res.position.as_dict())  # as saved to and loaded from disk
        self.seen.extend(res.lines)
        return res.lines


def test_tail_skips_history_then_reads_each_line_once(tmp_path):
    log = tmp_path / "av.log"
    log.write_bytes(line(1) + line(2))
    r = Reader(log)
    assert r.read() == []  # history is not news
    append(log, line(3) + b"2026-11-27 10:00:04 [\xca\xb5")  # a partial line (half a GBK character)
    assert r.read() == [line(3).rstrip(b"\r\n")]
    append(log, "时防护] 未完\r\n".encode("gbk"))
    (got,) = r.read()
    assert got.decode("gbk").endswith("未完")
    assert r.read() == []


def test_tail_follows_rename_rotation_and_copytruncate(tmp_path):
    log = tmp_path / "av.log"
    log.write_bytes(noise(0))
    r = Reader(log)
    r.read()
    append(log, line(1))
    r.read()
    # logrotate (rename): the product writes two more lines to the old file before reopening …
    with log.open("ab", buffering=0) as old:
        os.rename(log, tmp_path / "av.log.1")
        old.write(line(2))
        assert r.read() == [line(2).rstrip(b"\r\n")]  # new file not there yet: read the rotated one
        old.write(line(3))
    log.write_bytes(line(4))  # … then opens a new file
    assert r.read() == [line(3).rstrip(b"\r\n"), line(4).rstrip(b"\r\n")]
    # copytruncate: the file is emptied in place and written again.
    append(log, line(5))
    r.read()
    with log.open("r+b") as f:
        f.truncate(0)
    append(log, line(6))
    assert r.read() == [line(6).rstrip(b"\r\n")]
    assert r.seen == [line(i).rstrip(b"\r\n") for i in range(1, 7)]


def _cfg(log: Path, hold: float = 3600) -> antivirus.Config:
    return antivirus.Config(
        name="av",
        detection_hold=hold,
        logs=[antivirus.LogSource(name="终端安全", path=log, pattern=PATTERN, encoding="gbk", actions=ACTIONS)],
    )


def _detections(obs) -> dict[str, dict]:
    return {o.detail["file"]: o.detail for o in obs if o.check == "av.detection"}


def test_probe_reads_gbk_log_across_rotation_and_restart(tmp_path):
    log = tmp_path / "logs" / "av.log"
    log.parent.mkdir()
    log.write_bytes(noise(1) + line(0))  # before the agent was installed
    state = tmp_path / "state"
    state.mkdir()
    cfg = _cfg(log)

    ctx = ProbeContext(host="mzsf-01", state_dir=state)
    assert _detections(antivirus._round(cfg, ctx)) == {}

    append(log, line(1) + noise(2) + line(2, "处理失败"))
    dets = _detections(antivirus._round(cfg, ctx))
    assert set(dets) == {r"C:\Users\护士站\桌面\报表1.exe", r"C:\Users\护士站\桌面\报表2.exe"}
    assert dets[r"C:\Users\护士站\桌面\报表2.exe"]["action"] == "failed"
    assert dets[r"C:\Users\护士站\桌面\报表1.exe"]["threat"] == "Trojan.Win32.Agent.1"
    first = dict(dets)

    # Rotation while the agent is stopped, lines written before and after it; then a fresh agent process.
    append(log, line(3))
    os.rename(log, log.with_name("av.log.1"))
    log.write_bytes(line(4))
    ctx = ProbeContext(host="mzsf-01", state_dir=state)
    dets = _detections(antivirus._round(cfg, ctx))
    assert set(dets) == {rf"C:\Users\护士站\桌面\报表{i}.exe" for i in (1, 2, 3, 4)}
    # The detections held from before the restart are the same ones (same detection time), not new reports.
    for f, d in first.items():
        assert dets[f]["detected_at"] == d["detected_at"]


def test_expired_detections_are_not_read_again_after_restart(tmp_path):
    log = tmp_path / "av.log"
    log.write_bytes(b"")
    state = tmp_path / "state"
    state.mkdir()
    cfg = _cfg(log, hold=1)
    ctx = ProbeContext(host="mzsf-01", state_dir=state)
    antivirus._round(cfg, ctx)
    append(log, line(7))
    assert set(_detections(antivirus._round(cfg, ctx))) == {r"C:\Users\护士站\桌面\报表7.exe"}
    time.sleep(1.1)
    assert _detections(antivirus._round(cfg, ctx)) == {}  # the event is over: the condition clears
    ctx = ProbeContext(host="mzsf-01", state_dir=state)  # restart: the old line must not come back
    assert _detections(antivirus._round(cfg, ctx)) == {}


def test_log_source_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="named groups"):
        antivirus.LogSource(name="x", path=tmp_path / "a", pattern=r"(?P<threat>\S+)")
    with pytest.raises(ValueError, match="unknown encoding"):
        antivirus.LogSource(name="x", path=tmp_path / "a", pattern=PATTERN, encoding="gbk2")
    with pytest.raises(ValueError, match="byte-oriented"):
        antivirus.LogSource(name="x", path=tmp_path / "a", pattern=PATTERN, encoding="utf-16le")
    assert antivirus.LogSource(name="x", path=tmp_path / "a", pattern=PATTERN, encoding="GB18030").encoding
    with pytest.raises(ValueError, match="at least one source"):
        antivirus.Config()
