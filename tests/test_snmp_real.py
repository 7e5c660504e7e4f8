"""The SNMP probe against recordings of real devices (tests/data/snmp/real/, see SOURCES.md), served by snmpsim.

For each device: a healthy round raises nothing and reads what the recording holds (ports up and
down, CPU, memory, temperature, UPS runtime and charge), and says what the device does not
provide. Faults are injected by changing served values and must come out with the plan's trigger,
scope and severity.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import ProbeContext
from hisguard.checks.snmp import Config, probe
from hisguard.plan import Scope, Severity, Trigger
from tests.data.snmp.gen import rewrite
from tests.data.snmp.sim import SnmpSim
from tests.support import peers

REAL = Path(__file__).parent / "data" / "snmp" / "real"
ADDR = "127.0.0.1"
IF = "1.3.6.1.2.1.2.2.1"
HW = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"
MAIN_BOARD = "67108873"  # the S5720's entity with CPU, memory and temperature


def recording(name: str) -> str:
    return (REAL / f"{name}.snmprec").read_text()


def column(name: str, col: str) -> dict[str, str]:
    """{index: value} of one column, straight from the recording file."""
    out = {}
    for line in recording(name).splitlines():
        oid, _, rest = line.partition("|")
        if oid.startswith(col + "."):
            out[oid[len(col) + 1 :]] = rest.split("|", 1)[1]
    return out


@pytest.fixture(scope="module")
def sim():
    try:
        import snmpsim  # noqa: F401
    except ImportError:
        peers.need(False, "needs snmpsim (pip install -e '.[test]')")
    s = SnmpSim((ADDR,))
    for path in sorted(REAL.glob("*.snmprec")):
        s.copy(path.stem, path)
    s.start()
    yield s
    s.close()


@pytest.fixture
def served(sim):
    """Serve a changed copy of a recording for one test, and the original again afterwards."""
    changed: list[str] = []

    def serve(name: str, changes: dict[str, tuple[int | str, object]]) -> None:
        sim.write(name, rewrite(recording(name), changes))
        changed.append(name)

    yield serve
    for name in changed:
        sim.copy(name, REAL / f"{name}.snmprec")


def dev(sim: SnmpSim, name: str, **kw: object) -> dict:
    return {"name": name, "address": ADDR, "port": sim.port, "community": name, "timeout": 1.0, **kw}


def ctx(tmp_path: Path) -> ProbeContext:
    return ProbeContext(host="agent-1", state_dir=tmp_path)


def by(obs, check):
    return {o.subject: o for o in obs if o.check == check}


def one(obs, check):
    (o,) = [o for o in obs if o.check == check]
    return o


def incidents(obs):
    return classify("agent-1", [Failing("snmp", o) for o in obs if o.ok is False])


async def run(sim, tmp_path, name: str, **kw: object):
    return await probe(Config(devices=[dev(sim, name, **kw)], restart_hold=60), ctx(tmp_path))


# -- switches -------------------------------------------------------------------------------------------
S5720_UPLINKS = {"uplink_groups": [["XGigabitEthernet0/0/1", "XGigabitEthernet0/0/2"]], "hospital_critical": True}


async def test_huawei_s5720_healthy_reads_its_own_board_and_thresholds(sim, tmp_path):
    obs = await run(sim, tmp_path, "huawei-s5720", **S5720_UPLINKS)
    assert incidents(obs) == []
    cpu, mem, temp = one(obs, "snmp.cpu"), one(obs, "snmp.memory"), one(obs, "snmp.temperature")
    assert (cpu.value, mem.value, temp.value) == (44, 9, 42)  # entity 67108873; every other entity reads 0
    assert (cpu.detail["limit"], mem.detail["limit"], temp.detail["limit"]) == (95, 90, 57)  # the device's own
    assert temp.detail["limit_from"] == "device" and temp.detail["where"] == f"entity {MAIN_BOARD}"
    assert len(temp.detail["readings"]) == 1  # zeros are "no sensor", not 0 °C
    down = [i for i, v in column("huawei-s5720", f"{IF}.8").items() if v == "2"]
    assert one(obs, "snmp.edge_ports").value == len(down) == 55
    cov = one(obs, "snmp.coverage").detail
    assert cov["not_provided"] == [] and cov["read"]["temperature"] == "HUAWEI-ENTITY-EXTENT-MIB"


@pytest.mark.parametrize(
    ("changes", "check", "trigger", "severity"),
    [
        ({f"{HW}.11.{MAIN_BOARD}": (2, 60)}, "snmp.temperature", Trigger.FORCE_MAJEURE, Severity.CRITICAL),
        ({f"{HW}.5.{MAIN_BOARD}": (2, 97)}, "snmp.cpu", Trigger.SOFTWARE, Severity.URGENT),
        ({"1.3.6.1.2.1.1.3.0": (67, 3000)}, "snmp.restart", Trigger.SOFTWARE, Severity.URGENT),
        ({f"{HW}.2.67108869": (2, 4), f"{HW}.2.67125260": (2, 2)}, "snmp.hardware", Trigger.HARDWARE,
         Severity.CRITICAL),
        ({f"{IF}.8.54": (2, 2)}, "snmp.uplink_redundancy", Trigger.HARDWARE, Severity.URGENT),
        ({f"{IF}.8.54": (2, 2), f"{IF}.8.55": (2, 2)}, "snmp.uplink_group", Trigger.HARDWARE, Severity.CRITICAL),
    ],
)  # fmt: skip
async def test_huawei_s5720_faults(sim, served, tmp_path, changes, check, trigger, severity):
    c = ctx(tmp_path)
    cfg = Config(devices=[dev(sim, "huawei-s5720", **S5720_UPLINKS)], restart_hold=60)
    assert incidents(await probe(cfg, c)) == []
    served("huawei-s5720", changes)
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.evidence["check"], inc.trigger, inc.severity) == (check, trigger, severity)
    assert inc.scope is Scope.HOSPITAL
    if check == "snmp.hardware":  # two failed parts: one incident, the parts its evidence
        assert inc.evidence["faults"] == ["entity 67108869: offline", "entity 67125260: disabled"]
    if check.startswith("snmp.uplink"):
        assert [p["port"] for p in inc.evidence["down"]] == [
            "XGigabitEthernet0/0/1", "XGigabitEthernet0/0/2"][: 1 if check.endswith("redundancy") else 2]  # fmt: skip


async def test_huawei_s5720_placeholders_are_never_readings(sim, served, tmp_path):
    # An entity without a sensor that answers 65535 (as H3C firmware does) is not 65535 °C.
    served("huawei-s5720", {f"{HW}.11.67108869": (2, 65535), f"{HW}.12.67108869": (2, 65535)})
    obs = await run(sim, tmp_path, "huawei-s5720")
    assert one(obs, "snmp.temperature").value == 42 and incidents(obs) == []


async def test_huawei_ce12804_core_without_health_tables_says_so(sim, tmp_path):
    groups = [["40GE1/1/0/0", "40GE2/1/0/0"]]
    obs = await run(sim, tmp_path, "huawei-ce12804", uplink_groups=groups, hospital_critical=True)
    assert incidents(obs) == []
    cov = one(obs, "snmp.coverage").detail
    assert cov["not_provided"] == ["cpu", "memory", "temperature", "hardware"]
    assert cov["read"] == {"restarts": "sysUpTime", "interfaces": "IF-MIB"}


async def test_huawei_ce12804_one_core_uplink_down_is_redundancy_lost_both_down_one_outage(sim, served, tmp_path):
    groups = [["40GE1/1/0/0", "40GE2/1/0/0"]]
    cfg = Config(devices=[dev(sim, "huawei-ce12804", uplink_groups=groups, hospital_critical=True)])
    c = ctx(tmp_path)
    await probe(cfg, c)
    served("huawei-ce12804", {f"{IF}.8.67": (2, 2)})
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.evidence["check"], inc.severity) == ("snmp.uplink_redundancy", Severity.URGENT)
    served("huawei-ce12804", {f"{IF}.8.67": (2, 2), f"{IF}.8.148": (2, 2)})
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.evidence["check"], inc.severity, inc.scope) == ("snmp.uplink_group", Severity.CRITICAL,
                                                                 Scope.HOSPITAL)  # fmt: skip


async def test_ifalias_is_in_titles_and_chinese_survives_gbk_and_utf8(sim, served, tmp_path):
    # The CE12804's own description for 10GE1/4/0/2, which is down in the recording.
    obs = await run(sim, tmp_path, "huawei-ce12804", uplinks=["dowstream to CE"], department="门诊收费")
    (inc,) = incidents(obs)
    assert "10GE1/4/0/2（dowstream to CE）" in inc.title.zh and inc.evidence["alias"] == "dowstream to CE"
    # Descriptions staff write in Chinese, as GBK and as UTF-8 bytes.
    gbk, utf8 = "门诊楼-3".encode("gbk").hex(), "急诊楼-1".encode().hex()
    served("huawei-ce12804", {"1.3.6.1.2.1.31.1.1.1.18.67": ("4x", gbk), "1.3.6.1.2.1.31.1.1.1.18.148": ("4x", utf8),
                              f"{IF}.8.67": (2, 2)})  # fmt: skip
    obs = await run(sim, tmp_path, "huawei-ce12804", uplinks=["门诊楼-3", "#148"])
    ifs = by(obs, "snmp.interface")
    assert ifs["huawei-ce12804/40GE1/1/0/0"].detail["alias"] == "门诊楼-3"
    assert ifs["huawei-ce12804/40GE2/1/0/0"].detail["alias"] == "急诊楼-1"
    (inc,) = incidents(obs)
    assert "40GE1/1/0/0（门诊楼-3）" in inc.title.zh


async def test_two_independent_uplinks_down_are_one_incident_for_the_device(sim, served, tmp_path):
    served("huawei-ce12804", {f"{IF}.8.67": (2, 2), f"{IF}.8.68": (2, 2)})
    obs = await run(sim, tmp_path, "huawei-ce12804", uplinks=["40GE1/1/0/0", "40GE1/1/0/1"], department="急诊")
    (inc,) = incidents(obs)
    assert inc.key == "agent-1/snmp.interface/huawei-ce12804" and "2" in inc.title.en
    assert [p["port"] for p in inc.evidence["ports"]] == ["40GE1/1/0/0", "40GE1/1/0/1"]


@pytest.mark.parametrize(
    ("name", "uplink", "index"),
    [("ruijie-s6220", "AggregatePort 1", "69"), ("maipu-s3220", "link-aggregation 1", "157"),
     ("cisco-c2960x", "Port-channel1", "5001"), ("zte-zxr10-5250", "2/1", "49")],
)  # fmt: skip
async def test_switches_without_health_tables_watch_their_uplink_and_say_what_they_lack(
    sim, served, tmp_path, name, uplink, index
):
    c = ctx(tmp_path)
    cfg = Config(devices=[dev(sim, name, uplinks=[uplink], department="门诊挂号")])
    obs = await probe(cfg, c)
    assert incidents(obs) == []
    assert by(obs, "snmp.interface")[f"{name}/{uplink}"].ok
    down = [i for i, v in column(name, f"{IF}.8").items() if v == "2" and column(name, f"{IF}.7").get(i, "1") == "1"]
    assert one(obs, "snmp.edge_ports").value == len(down)
    cov = one(obs, "snmp.coverage").detail
    assert {"cpu", "memory", "temperature"} <= set(cov["not_provided"])
    if name == "maipu-s3220":  # this walk has no sysUpTime: restarts cannot be seen, and it says so
        assert "restarts" in cov["not_provided"]
    served(name, {f"{IF}.8.{index}": (2, 2)})
    await probe(cfg, c)
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.trigger, inc.scope, inc.severity) == (Trigger.HARDWARE, Scope.DEPARTMENT, Severity.URGENT)
    assert uplink in inc.title.zh


@pytest.mark.parametrize("name", ["zte-c320", "h3c-s3100", "h3c-v1910"])
async def test_identification_only_recordings_raise_nothing_and_show_nothing_is_readable(sim, tmp_path, name):
    obs = await run(sim, tmp_path, name)
    assert incidents(obs) == [] and not [o for o in obs if o.check == "snmp.error"]
    cov = one(obs, "snmp.coverage").detail
    assert cov["read"] == {} and {"interfaces", "cpu", "temperature", "restarts"} <= set(cov["not_provided"])
    assert cov["vendor"] == {"zte-c320": "zte", "h3c-s3100": "h3c", "h3c-v1910": "h3c"}[name]


async def test_linux_server_reads_host_resources(sim, tmp_path):
    obs = await run(sim, tmp_path, "linux-server", kind="server")
    assert incidents(obs) == []
    assert one(obs, "snmp.cpu").value == (13 + 9) / 2 and one(obs, "snmp.cpu").detail["source"] == "HOST-RESOURCES-MIB"
    # Physical memory less net-snmp's buffers and page cache: (958176 - 23900 - 207040) / 1021976.
    assert one(obs, "snmp.memory").value == 71.2
    assert [o.subject for o in by(obs, "snmp.interface").values()] == ["linux-server/eth0"]  # not the loopback


# -- UPS units ------------------------------------------------------------------------------------------
PPC = "1.3.6.1.4.1.935.1.1.1"
XUPS = "1.3.6.1.4.1.534.1"
UPSMIB = "1.3.6.1.2.1.33.1"


@pytest.mark.parametrize(
    ("name", "charge", "minutes", "not_provided"),
    [
        ("megatec-netagent2", 100, None, {"runtime", "alarms", "battery"}),
        ("eaton-connectups", 100, None, {"runtime", "bypass", "alarms", "battery"}),
        ("eaton-9px", 100, round(17218 / 60, 1), {"battery"}),
        ("apc-smartups-1400", 100, 696000 / 6000, {"on_battery", "bypass", "alarms"}),
        ("rfc1628-cs121", 100, 95, {"alarms", "battery"}),
    ],
)
async def test_ups_healthy_reads_charge_and_runtime_and_says_what_it_lacks(
    sim, tmp_path, name, charge, minutes, not_provided
):
    obs = await run(sim, tmp_path, name, kind="ups")
    assert incidents(obs) == []
    low = one(obs, "snmp.ups.runtime_low")
    assert (low.detail["charge_percent"], low.detail["minutes_remaining"]) == (charge, minutes)
    assert set(one(obs, "snmp.coverage").detail["not_provided"]) & {"runtime", "on_battery", "bypass", "alarms",
                                                                     "battery"} == not_provided  # fmt: skip


async def test_megatec_standby_is_healthy_and_its_states_are_read(sim, served, tmp_path):
    cfg = Config(devices=[dev(sim, "megatec-netagent2", kind="ups", department="门诊药房")])
    c = ctx(tmp_path)
    assert one(await probe(cfg, c), "snmp.ups.on_battery").ok  # upsBaseOutputStatus 8 = standBy
    served("megatec-netagent2", {f"{PPC}.4.1.1.0": (2, 3)})
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.trigger, inc.key) == (Trigger.FORCE_MAJEURE, "agent-1/snmp.ups/megatec-netagent2")
    served("megatec-netagent2", {f"{PPC}.4.1.1.0": (2, 6)})
    (inc,) = incidents(await probe(cfg, c))
    assert "bypass" in inc.title.en and inc.severity is Severity.URGENT


async def test_eaton_card_without_output_source_reads_mains_loss_from_input_voltage(sim, served, tmp_path):
    cfg = Config(devices=[dev(sim, "eaton-connectups", kind="ups", hospital_critical=True)])
    c = ctx(tmp_path)
    obs = await probe(cfg, c)
    assert one(obs, "snmp.ups.on_battery").detail["on_battery_from"] == "input voltage"
    served("eaton-connectups", {f"{XUPS}.3.4.1.2.1": (2, 0)})
    (inc,) = incidents(await probe(cfg, c))
    assert (inc.trigger, inc.scope) == (Trigger.FORCE_MAJEURE, Scope.HOSPITAL) and "on battery" in inc.title.en


@pytest.mark.parametrize(
    ("name", "changes", "words", "place", "severity"),
    [
        ("eaton-9px", {f"{XUPS}.4.5.0": (2, 5), f"{XUPS}.2.1.0": (2, 240)}, "about 4.0 min left", {},
         Severity.CRITICAL),
        ("eaton-9px", {f"{XUPS}.4.5.0": (2, 4)}, "on bypass", {}, Severity.URGENT),
        ("eaton-9px", {f"{XUPS}.4.5.0": (2, 4)}, "on bypass", {"hospital_critical": True}, Severity.CRITICAL),
        ("eaton-9px", {f"{XUPS}.7.1.0": (66, 1)}, "alarm", {"department": "手术室"}, Severity.URGENT),
        ("rfc1628-cs121", {f"{UPSMIB}.4.1.0": (2, 5), f"{UPSMIB}.2.3.0": (2, 12)}, "on battery", {},
         Severity.URGENT),
        ("rfc1628-cs121", {f"{UPSMIB}.4.1.0": (2, 4)}, "on bypass", {}, Severity.URGENT),
        ("rfc1628-cs121", {f"{UPSMIB}.4.1.0": (2, 2)}, "output off", {}, Severity.URGENT),
        ("apc-smartups-1400", {"1.3.6.1.4.1.318.1.1.1.2.1.1.0": (2, 4)}, "battery failed", {}, Severity.URGENT),
        ("apc-smartups-1400", {"1.3.6.1.4.1.318.1.1.1.2.1.1.0": (2, 3), "1.3.6.1.4.1.318.1.1.1.2.2.3.0": (67, 24000)},
         "battery low", {}, Severity.CRITICAL),
    ],
)  # fmt: skip
async def test_ups_faults(sim, served, tmp_path, name, changes, words, place, severity):
    cfg = Config(devices=[dev(sim, name, kind="ups", **place)])
    c = ctx(tmp_path)
    assert incidents(await probe(cfg, c)) == []
    served(name, changes)
    (inc,) = incidents(await probe(cfg, c))
    assert inc.trigger is Trigger.FORCE_MAJEURE and words in inc.title.en, inc.title.en
    assert inc.severity is severity
