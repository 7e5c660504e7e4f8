import json
import time

import psutil

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import Impact, ProbeContext
from hisguard.checks.host import Config, probe
from hisguard.plan import Scope, Severity, Trigger


def ctx(tmp_path, **impact):
    return ProbeContext(host="his-db-01", state_dir=tmp_path, impact=Impact(**impact))


async def test_real_host_values_and_a_missing_required_process(tmp_path):
    me = psutil.Process().name()
    cfg = Config(processes=[me, "no-such-his-appserver"], disk_percent_max=100, interval=30)
    c = ctx(tmp_path, hospital_critical=True)
    await probe(cfg, c)  # the first round primes the CPU counter
    obs = {(o.check, o.subject): o for o in await probe(cfg, c)}
    assert 0 <= obs[("host.cpu", "cpu")].value <= 100
    assert 0 < obs[("host.memory", "memory")].value < 100 and obs[("host.memory", "memory")].ok
    assert obs[("host.disk", "/")].ok and obs[("host.disk", "/")].detail["free_bytes"] > 0
    assert obs[("host.process", me)].ok is True
    missing = obs[("host.process", "no-such-his-appserver")]
    assert missing.ok is False
    (inc,) = classify("his-db-01", [Failing("host", missing)])
    assert inc.trigger is Trigger.SOFTWARE and inc.scope is Scope.HOSPITAL and inc.severity is Severity.CRITICAL
    assert "no-such-his-appserver" in inc.title.zh and "no-such-his-appserver" in inc.title.en


async def test_full_disk_and_missing_mount_are_reported(tmp_path):
    cfg = Config(disk_percent_max=0.001, mounts=["/", "/no/such/mount"])
    obs = {(o.check, o.subject): o for o in await probe(cfg, ctx(tmp_path, department="门诊收费"))}
    assert obs[("host.disk", "/")].ok is False
    assert obs[("host.mount", "/no/such/mount")].ok is False
    incs = {i.evidence["check"]: i for i in classify("ws", [Failing("host", o) for o in obs.values() if o.ok is False])}
    assert incs["host.disk"].severity is Severity.URGENT and incs["host.disk"].trigger is Trigger.SOFTWARE
    assert incs["host.mount"].trigger is Trigger.HARDWARE and incs["host.mount"].departments == ["门诊收费"]


async def test_boots_within_the_window_make_a_reboot_loop(tmp_path):
    cfg = Config(reboot_loop_count=3, reboot_loop_window=3600)
    c = ctx(tmp_path)
    this_boot_recent = psutil.boot_time() >= time.time() - 3600
    loop = {o.check: o for o in await probe(cfg, c)}["host.reboot_loop"]
    assert loop.ok and loop.value == (1.0 if this_boot_recent else 0.0)  # this boot, recorded
    now = time.time()
    (tmp_path / "host-boots.json").write_text(json.dumps([now - 3000, now - 2000, now - 1000]))
    loop = {o.check: o for o in await probe(cfg, c)}["host.reboot_loop"]
    # Three boots in the hour (plus this one if it was recent): the machine keeps restarting.
    assert loop.ok is False and loop.value == (4.0 if this_boot_recent else 3.0) and loop.detail["rebooted"] is True
    assert len(json.loads((tmp_path / "host-boots.json").read_text())) == 4
    (tmp_path / "host-boots.json").write_text(json.dumps([now - 90000, now - 80000]))
    loop = {o.check: o for o in await probe(cfg, c)}["host.reboot_loop"]
    assert loop.ok is True  # old boots are outside the window
