"""Real ClamAV: clamd with a custom signature database, a real agent process and a real server process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hisguard.checks import antivirus
from hisguard.checks.base import ProbeContext
from tests.support.peers import need_binary
from tests.support.procs import AgentProc, ServerProc, wait_until

# The standard antivirus test file (harmless by definition) and a marker string of our own.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"HISGUARD-TEST-MARKER-7f3a"


class Clamd:
    def __init__(self, root: Path) -> None:
        self.binary = need_binary("clamd")
        self.root = root
        db = root / "db"
        db.mkdir(parents=True)
        (db / "test.hdb").write_text("44d88612fea8a8f36de82e1278abb02f:68:Test.EICAR\n")
        (db / "test.ndb").write_text(f"HisGuard.Test.Marker:0:*:{MARKER.hex()}\n")
        self.db = db
        self.socket = root / "clamd.sock"
        self.log = root / "clamd.log"
        self.conf = root / "clamd.conf"
        self.conf.write_text(
            f"DatabaseDirectory {db}\nLocalSocket {self.socket}\nLogFile {self.log}\nLogTime yes\n"
            f"Foreground yes\nPidFile {root / 'clamd.pid'}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Clamd:
        out = (self.root / "clamd.out").open("ab")
        self.proc = subprocess.Popen([self.binary, f"--config-file={self.conf}"], stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self._pong(), 20, what="clamd PONG")
        return self

    def _pong(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"clamd exited: {(self.root / 'clamd.out').read_text()[-1000:]}")
        try:
            return antivirus.clamd_command(str(self.socket), "PING", 1.0) == b"PONG\0"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def clamd(tmp_path):
    c = Clamd(tmp_path / "clamav").start()
    yield c
    c.stop()


@pytest.fixture
def server(tmp_path):
    srv = ServerProc(tmp_path / "server").start()
    yield srv
    srv.stop()


def _open(server: ServerProc) -> list[dict]:
    return [i for i in server.incidents(status="open") if i["trigger"] == 5]


def test_dropped_files_reach_the_server_as_incidents_and_stopping_clamd_is_protection_loss(tmp_path, clamd, server):
    watched = tmp_path / "门诊收费" / "下载"
    watched.mkdir(parents=True)
    (watched / "正常文档.txt").write_text("挂号单\n", encoding="utf-8")
    token = server.agent_token("mzsf-01", "renmin")
    agent = AgentProc(
        tmp_path / "agent",
        f"""
[agent]
name = "mzsf-01"
department = "门诊收费"
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{server.url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.antivirus]]
name = "av"
interval = 5
timeout = 4
role = "workstation"
clamd = {{ socket = "{clamd.socket}", scan_paths = ["{watched}"], log = "{clamd.log}" }}
""",
    ).start()
    try:
        wait_until(lambda: server.get("/agents")[0]["last_seen"], 15, what="first heartbeat")
        time.sleep(1.0)
        assert _open(server) == []  # clamd answers, the clean file is clean

        dropped = time.monotonic()
        (watched / "eicar.com").write_bytes(EICAR)
        (watched / "发票打印.doc").write_bytes(b"\xd0\xcf\x11\xe0 ... " + MARKER + b" ... \n")
        incs = wait_until(lambda: len(_open(server)) >= 2 and _open(server), 10, what="two detection incidents")
        took = time.monotonic() - dropped
        by_threat = {i["evidence"]["threat"]: i for i in incs}
        eicar = by_threat["Test.EICAR.UNOFFICIAL"]
        marker = by_threat["HisGuard.Test.Marker.UNOFFICIAL"]
        assert eicar["evidence"]["file"] == str(watched / "eicar.com")
        assert marker["evidence"]["file"] == str(watched / "发票打印.doc")
        for inc in (eicar, marker):
            assert (inc["severity"], inc["host"]) == ("routine", "mzsf-01")  # one workstation: guide by phone
            assert inc["evidence"]["check"] == "av.detection"
            assert "Test" in inc["title_en"] and "检出病毒" in inc["title_zh"]
        print(f"\n  dropped files → server incidents in {took:.2f}s (round interval 5s; file events ask for a round)")
        assert len(_open(server)) == 2  # the clamd log repeats both FOUND lines: same detections, no new incidents

        # While the agent is down, another scanner (clamdscan, on-access) finds a file outside the watched
        # folder: only the clamd log tells. The restarted agent reports it once, and nothing else again.
        agent.stop()
        elsewhere = tmp_path / "病房" / "u盘拷贝.com"
        elsewhere.parent.mkdir()
        elsewhere.write_bytes(EICAR)
        scan = subprocess.run(
            [need_binary("clamdscan"), f"--config-file={clamd.conf}", "--no-summary", str(elsewhere)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert scan.returncode == 1 and "FOUND" in scan.stdout
        agent.start()
        wait_until(lambda: len(_open(server)) == 3, 15, what="the detection from the clamd log")
        agent.stop()
        agent.start()  # and once more: the log is not read twice
        time.sleep(3)  # a few rounds (the first at start) and heartbeats
        every = [i for i in server.incidents() if i["trigger"] == 5]
        assert sorted(i["evidence"]["file"] for i in every) == sorted(
            [str(watched / "eicar.com"), str(watched / "发票打印.doc"), str(elsewhere)]
        )

        clamd.stop()
        stopped = time.monotonic()
        (loss,) = wait_until(
            lambda: [i for i in _open(server) if i["evidence"]["check"] == "av.protection"], 15, what="protection loss"
        )
        print(f"  clamd stopped → protection-loss incident in {time.monotonic() - stopped:.2f}s")
        assert "ClamAV" in loss["title_en"] and "防护已关闭" in loss["title_zh"]
        assert "not answering" in loss["evidence"]["reason"]
    finally:
        agent.stop()
    assert "Traceback" not in agent.output()


def test_scan_skips_canaries_and_unchanged_files(tmp_path, clamd):
    from hisguard.checks import canary

    folder = tmp_path / "共享"
    folder.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    ctx = ProbeContext(host="his-app-01", state_dir=state)
    canary._round(canary.Config(name="bait", folders=[folder]), ctx)
    baits = canary.canary_paths(state)
    assert len(baits) == 3
    # A canary a scanner would flag: if our own scan touched it, a detection would say so.
    bait = sorted(baits)[0]
    (folder / "eicar.com").write_bytes(EICAR)
    cfg = antivirus.Config(
        name="av", role="app_server", clamd=antivirus.ClamdSource(socket=str(clamd.socket), scan_paths=[folder])
    )
    obs = antivirus._round(cfg, ProbeContext(host="his-app-01", state_dir=state))
    (det,) = [o for o in obs if o.check == "av.detection.server"]
    assert det.detail["file"] == str(folder / "eicar.com")
    sources = next(o for o in obs if o.check == "av.sources")
    assert sources.detail["scanned"] == 1  # eicar.com only: the three canaries are never handed to clamd
    assert bait not in clamd.log.read_text()
    obs = antivirus._round(cfg, ProbeContext(host="his-app-01", state_dir=state, memory={}))
    assert next(o for o in obs if o.check == "av.sources").detail["scanned"] == 0  # nothing changed since


def test_stale_custom_signatures_from_database_age(tmp_path, clamd):
    import os

    old = time.time() - 30 * 86400
    for f in clamd.db.iterdir():
        os.utime(f, (old, old))
    state = tmp_path / "state"
    state.mkdir()
    cfg = antivirus.Config(
        name="av",
        signature_max_age_days=7,
        clamd=antivirus.ClamdSource(socket=str(clamd.socket), database_dir=clamd.db),
    )
    obs = antivirus._round(cfg, ProbeContext(host="h", state_dir=state))
    (sig,) = [o for o in obs if o.check == "av.signatures"]
    assert sig.ok is False and sig.value == pytest.approx(30, abs=0.1)
    (prot,) = [o for o in obs if o.check == "av.protection"]
    assert prot.ok is True and prot.detail["engine"]
