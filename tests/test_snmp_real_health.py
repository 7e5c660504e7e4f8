"""Vendor health tables and UPS cards from real device walks (tests/data/snmp/real/, see SOURCES.md).

These recordings carry what the first corpus lacked: H3C hh3cEntityExt on two Comware models (one on
H3C's older OID arc), Cisco CISCO-PROCESS/ENVMON on IOS 12.2 and IOS-XE 17.12, a Huawei core chassis
with per-board thresholds and its fan table, a ZTE switch, and UPS cards (PPC/Megatec with a runtime
object, RFC 1628 with its alarm table, Eaton 93E, APC PowerNet in full). Each is read healthy first
(the values read are the recording's), then faults are injected by changing served values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hisguard.checks.snmp import Config, probe
from hisguard.plan import Scope, Severity, Trigger
from tests.test_snmp_real import ADDR, IF, REAL, by, column, ctx, dev, incidents, one, recording, run, sim  # noqa: F401

H3C = "1.3.6.1.4.1.25506.2.6.1.1.1.1"
H3C_OLD = "1.3.6.1.4.1.2011.10.2.6.1.1.1.1"
HW = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"
HW_FAN = "1.3.6.1.4.1.2011.5.25.31.1.1.10.1.7"
ENVMON = "1.3.6.1.4.1.9.9.13.1"
CPM = "1.3.6.1.4.1.9.9.109.1.1.1.1"
UPSMIB = "1.3.6.1.2.1.33.1"
PPC = "1.3.6.1.4.1.935.1.1.1"
APC = "1.3.6.1.4.1.318.1.1.1"


def _key(line: str) -> tuple[int, ...]:
    return tuple(int(x) for x in line.split("|", 1)[0].split("."))


def changed(name: str, changes: dict[str, tuple[int | str, object]]) -> str:
    """The recording with values replaced, and rows a fault adds (an alarm table row) inserted in OID order."""
    lines = {line.split("|", 1)[0]: line for line in recording(name).splitlines()}
    for oid, (tag, value) in changes.items():
        lines[oid] = f"{oid}|{tag}|{value}"
    return "\n".join(sorted(lines.values(), key=_key)) + "\n"


@pytest.fixture
def served(sim):  # noqa: F811
    names: list[str] = []

    def serve(name: str, changes: dict[str, tuple[int | str, object]]) -> None:
        sim.write(name, changed(name, changes))
        names.append(name)

    yield serve
    for name in names:
        sim.copy(name, REAL / f"{name}.snmprec")


def numbers(name: str, col: str, skip: tuple[int, ...] = ()) -> dict[str, int]:
    return {i: int(v) for i, v in column(name, col).items() if int(v) not in skip}


async def healthy_then(sim, served, tmp_path: Path, name: str, changes: dict, **kw: object):  # noqa: F811
    """One clean round (no incident), then the same device with `changes` served: its incidents."""
    c = ctx(tmp_path)
    cfg = Config(devices=[dev(sim, name, **kw)], restart_hold=60)
    assert incidents(await probe(cfg, c)) == []
    served(name, changes)
    return incidents(await probe(cfg, c))


# -- H3C SR8808-X: Comware 7.1.075, two chassis in IRF (core) ----------------------------------------------
BOARDS = ("1432", "1433", "1434", "1436", "1437", "1442", "1443", "1444", "1445",
          "1468", "1469", "1470", "1472", "1473", "1478", "1479", "1480", "1481")  # fmt: skip


async def test_h3c_sr8808x_reads_its_boards_only_and_ignores_limits_it_cannot_cross(sim, tmp_path):  # noqa: F811
    obs = await run(sim, tmp_path, "h3c-sr8808x")
    assert incidents(obs) == []
    cpu, mem, temp = one(obs, "snmp.cpu"), one(obs, "snmp.memory"), one(obs, "snmp.temperature")
    # Every board, and nothing else: slots, chassis, PSUs and the fan answer CPU 0 with threshold 0.
    assert [r["where"] for r in cpu.detail["readings"]][:18] == [f"entity {b}" for b in BOARDS]
    assert len(cpu.detail["readings"]) == len(mem.detail["readings"]) == 18
    assert cpu.value == max(numbers("h3c-sr8808x", f"{H3C}.6").values()) == 24
    assert (cpu.detail["limit"], cpu.detail["limit_from"]) == (99, "device")
    # The boards state a memory threshold of 100 %: a limit that is reached only when memory is gone.
    assert set(numbers("h3c-sr8808x", f"{H3C}.9", skip=(0,)).values()) == {100}
    assert (mem.value, mem.detail["limit"], mem.detail["limit_from"]) == (55, 90, "default")
    # Temperatures: 65535 (no sensor) on slots, PSUs, fans and ports. Boards give a reading but no limit
    # (65535); the sensor entities give both (65, 75, 88, 95 °C).
    temps = numbers("h3c-sr8808x", f"{H3C}.12", skip=(65535,))
    limits = numbers("h3c-sr8808x", f"{H3C}.13", skip=(65535,))
    assert set(BOARDS) <= set(temps) and set(limits) < set(temps) and set(limits.values()) == {65, 75, 88, 95}
    expected = [(f"entity {i}", v, limits.get(i, 65)) for i, v in sorted(temps.items(), key=lambda kv: int(kv[0]))]
    assert [(r["where"], r["value"], r["limit"]) for r in temp.detail["readings"]] == expected[:20]
    assert (temp.value, temp.detail["where"], temp.detail["limit_from"]) == (43, "entity 1444", "default")
    assert one(obs, "snmp.hardware").ok and one(obs, "snmp.coverage").detail["not_provided"] == []


@pytest.mark.parametrize(
    ("changes", "check", "trigger", "severity", "evidence"),
    [
        ({f"{H3C}.12.1444": (2, 70)}, "snmp.temperature", Trigger.FORCE_MAJEURE, Severity.CRITICAL, None),
        ({f"{H3C}.6.1436": (2, 99)}, "snmp.cpu", Trigger.SOFTWARE, Severity.URGENT, None),
        ({f"{H3C}.8.1436": (2, 96)}, "snmp.memory", Trigger.SOFTWARE, Severity.URGENT, None),
        ({f"{H3C}.19.2070": (2, 51), f"{H3C}.19.2533": (2, 41)}, "snmp.hardware", Trigger.HARDWARE,
         Severity.CRITICAL, ["entity 2070: psuError", "entity 2533: fanError"]),
    ],
)  # fmt: skip
async def test_h3c_sr8808x_faults(sim, served, tmp_path, changes, check, trigger, severity, evidence):  # noqa: F811
    (inc,) = await healthy_then(sim, served, tmp_path, "h3c-sr8808x", changes, hospital_critical=True)
    assert (inc.evidence["check"], inc.trigger, inc.severity, inc.scope) == (check, trigger, severity, Scope.HOSPITAL)
    if evidence:  # a PSU and a fan: one incident, both parts its evidence
        assert inc.evidence["faults"] == evidence


# -- H3C E528: Comware 5.20, answering on H3C's older arc (2011.10) only ------------------------------------
async def test_h3c_e528_on_the_older_arc_is_read(sim, tmp_path):  # noqa: F811
    assert not [line for line in recording("h3c-e528").splitlines() if line.startswith(H3C)]
    obs = await run(sim, tmp_path, "h3c-e528")
    assert incidents(obs) == []
    cpu, mem, temp = one(obs, "snmp.cpu"), one(obs, "snmp.memory"), one(obs, "snmp.temperature")
    assert cpu.detail["source"] == "H3C-ENTITY-EXT-MIB (compatible)"
    assert (cpu.value, mem.value) == (int(column("h3c-e528", f"{H3C_OLD}.6")["30"]), 53) == (49, 53)
    assert cpu.detail["limit"] == mem.detail["limit"] == 90  # the module's own 100 % is no limit
    # The module and its sensor both read 40 °C against the device's own 85 °C; 0/0 entities are no sensors.
    assert [(r["where"], r["value"], r["limit"]) for r in temp.detail["readings"]] == [
        ("entity 30", 40, 85), ("entity 34", 40, 85)]  # fmt: skip
    cov = one(obs, "snmp.coverage").detail
    assert {"cpu", "memory", "temperature", "hardware"} <= set(cov["read"])
    assert "restarts" in cov["not_provided"]  # the published walk's sysUpTime is simulated: not kept


async def test_h3c_with_a_system_oid_on_the_older_arc_is_still_h3c(sim, served, tmp_path):  # noqa: F811
    # Comware's compatible MIB style also reports sysObjectID under 2011.10, inside Huawei's number.
    served("h3c-e528", {"1.3.6.1.2.1.1.2.0": (6, "1.3.6.1.4.1.2011.10.1.89")})
    obs = await run(sim, tmp_path, "h3c-e528")
    assert one(obs, "snmp.coverage").detail["vendor"] == "h3c" and one(obs, "snmp.cpu").value == 49


# -- Cisco: IOS 12.2 (Catalyst 3560G, 3750) and IOS-XE 17.12 (IE-3200) ----------------------------------
async def test_cisco_c3560g_says_its_own_temperature_is_in_warning_and_that_is_reported(sim, tmp_path):  # noqa: F811
    # As recorded: 61 °C under its 66 °C limit, but the switch's own state for the sensor is warning (YELLOW).
    assert column("cisco-c3560g", f"{ENVMON}.3.1.6") == {"1005": "2"}
    obs = await run(sim, tmp_path, "cisco-c3560g", department="护士站")
    temp = one(obs, "snmp.temperature")
    assert (temp.ok, temp.value, temp.detail["limit"], temp.detail["device_state"]) == (False, 61, 66, "warning")
    (inc,) = incidents(obs)
    assert (inc.trigger, inc.severity, inc.scope) == (Trigger.FORCE_MAJEURE, Severity.URGENT, Scope.DEPARTMENT)
    # A hospital that knows this closet runs warm sets its own limit; then the configuration decides.
    obs = await run(sim, tmp_path, "cisco-c3560g", temperature_max=70)
    assert incidents(obs) == [] and one(obs, "snmp.temperature").detail["limit_from"] == "config"


@pytest.mark.parametrize(
    ("name", "pools"),
    [("cisco-c3560g", {"Processor": 29.3, "I/O": 43.4, "Driver text": 0.0}),
     ("cisco-c3750", {"Processor": 41.9, "I/O": 70.8, "Driver text": 0.0})],
)  # fmt: skip
async def test_cisco_ios12_memory_comes_from_its_memory_pools(sim, tmp_path, name, pools):  # noqa: F811
    assert not column(name, f"{CPM}.12")  # IOS 12.2 has no cpmCPUMemoryUsed
    used, free = column(name, "1.3.6.1.4.1.9.9.48.1.1.1.5"), column(name, "1.3.6.1.4.1.9.9.48.1.1.1.6")
    assert pools["Processor"] == round(100 * int(used["1"]) / (int(used["1"]) + int(free["1"])), 1)
    obs = await run(sim, tmp_path, name, temperature_max=70)
    mem = one(obs, "snmp.memory")
    assert mem.detail["source"] == "CISCO-MEMORY-POOL-MIB"
    assert {r["where"]: r["value"] for r in mem.detail["readings"]} == pools and mem.value == max(pools.values())
    assert one(obs, "snmp.cpu").value == int(column(name, f"{CPM}.8")["1"])
    assert "memory" not in one(obs, "snmp.coverage").detail["not_provided"]


@pytest.mark.parametrize(
    ("name", "changes", "check", "evidence"),
    [
        ("h3c-e528", {f"{H3C_OLD}.12.34": (2, 90)}, "snmp.temperature", None),
        ("h3c-e528", {f"{H3C_OLD}.19.31": (2, 51), f"{H3C_OLD}.19.33": (2, 41)}, "snmp.hardware",
         ["entity 31: psuError", "entity 33: fanError"]),
        ("h3c-e528", {f"{H3C_OLD}.6.30": (2, 97)}, "snmp.cpu", None),
        ("cisco-c3750", {f"{ENVMON}.5.1.3.1003": (2, 3)}, "snmp.hardware",
         ["Sw1, PS1 Normal, RPS NotExist: critical"]),
        ("cisco-c3750", {f"{ENVMON}.4.1.3.1004": (2, 4)}, "snmp.hardware", ["Switch#1, Fan#1: shutdown"]),
        ("cisco-c3750", {f"{CPM}.8.1": (66, 97)}, "snmp.cpu", None),
        ("cisco-c3750", {"1.3.6.1.4.1.9.9.48.1.1.1.6.2": (66, 100000)}, "snmp.memory", None),  # I/O memory gone
    ],
)  # fmt: skip
async def test_access_switch_faults(sim, served, tmp_path, name, changes, check, evidence):  # noqa: F811
    """An access switch serving one department (the H3C E528 on the older arc, the Cisco 3750 on IOS 12.2)."""
    (inc,) = await healthy_then(sim, served, tmp_path, name, changes, department="门诊收费")
    assert (inc.evidence["check"], inc.scope) == (check, Scope.DEPARTMENT)
    if evidence:  # several failed parts: one incident, the parts its evidence
        assert inc.evidence["faults"] == evidence


async def test_cisco_ie3200_iosxe_healthy_and_an_unfed_second_supply_is_no_fault(sim, tmp_path):  # noqa: F811
    obs = await run(sim, tmp_path, "cisco-ie3200", uplinks=["Gi1/1"])
    assert incidents(obs) == []
    assert (one(obs, "snmp.cpu").value, one(obs, "snmp.memory").value) == (1, round(100 * 1028544 / 1968196, 1))
    temp = one(obs, "snmp.temperature")
    assert (temp.value, temp.detail["limit"], temp.detail["limit_from"]) == (48, 105, "device")
    # "Sw1, PSB Failed" with state notPresent: the second power input is not wired. Not a fault.
    assert column("cisco-ie3200", f"{ENVMON}.5.1.3") == {"13": "1", "33": "5"}
    assert one(obs, "snmp.hardware").ok and by(obs, "snmp.interface")["cisco-ie3200/Gi1/1"].ok


@pytest.mark.parametrize(
    ("changes", "check", "trigger", "severity"),
    [
        ({f"{ENVMON}.3.1.3.1001": (66, 106)}, "snmp.temperature", Trigger.FORCE_MAJEURE, Severity.CRITICAL),
        ({f"{ENVMON}.3.1.6.1001": (2, 3)}, "snmp.temperature", Trigger.FORCE_MAJEURE, Severity.CRITICAL),
        ({f"{ENVMON}.5.1.3.13": (2, 3)}, "snmp.hardware", Trigger.HARDWARE, Severity.CRITICAL),
        ({f"{IF}.8.1": (2, 2)}, "snmp.interface", Trigger.HARDWARE, Severity.CRITICAL),
    ],
)  # fmt: skip
async def test_cisco_ie3200_faults(sim, served, tmp_path, changes, check, trigger, severity):  # noqa: F811
    incs = await healthy_then(sim, served, tmp_path, "cisco-ie3200", changes, uplinks=["Gi1/1"],
                              hospital_critical=True)  # fmt: skip
    if check == "snmp.interface":  # an uplink needs two bad rounds
        incs = incidents(await probe(Config(devices=[dev(sim, "cisco-ie3200", uplinks=["Gi1/1"],
                                                         hospital_critical=True)]), ctx(tmp_path)))  # fmt: skip
    (inc,) = incs
    assert (inc.evidence["check"], inc.trigger, inc.severity) == (check, trigger, severity)
    if check == "snmp.temperature" and "3.1.6" in next(iter(changes)):
        assert inc.evidence["device_state"] == "critical" and inc.evidence["value"] == 48


# -- Huawei S12704: VRP core chassis, per-board thresholds and its fan table --------------------------------
S12704_BOARDS = {"67371017": 60, "67633161": 65, "67895305": 75, "68157449": 75, "68419593": 63,
                 "68943881": 67, "69206025": 67}  # fmt: skip


async def test_huawei_s12704_reads_each_board_against_its_own_limit_and_its_fans(sim, tmp_path):  # noqa: F811
    obs = await run(sim, tmp_path, "huawei-s12704", hospital_critical=True)
    assert incidents(obs) == []
    temp = one(obs, "snmp.temperature")
    assert {r["where"]: r["limit"] for r in temp.detail["readings"]} == {f"entity {k}": v for k, v in
                                                                          S12704_BOARDS.items()}  # fmt: skip
    assert numbers("huawei-s12704", f"{HW}.12", skip=(0,)) == S12704_BOARDS
    assert one(obs, "snmp.cpu").value == 41 and one(obs, "snmp.cpu").detail["where"] == "entity 68419593"
    assert column("huawei-s12704", HW_FAN) == {"30.1": "1", "30.2": "1", "31.1": "1", "31.2": "1"}
    assert one(obs, "snmp.hardware").ok and one(obs, "snmp.coverage").detail["not_provided"] == []


@pytest.mark.parametrize(
    ("changes", "check", "evidence"),
    [
        # 61 °C: over LPU Board 1's own 60 °C, under every other board's limit.
        ({f"{HW}.11.67371017": (2, 61)}, "snmp.temperature", None),
        ({f"{HW_FAN}.30.2": (2, 2), f"{HW}.2.70516745": (2, 4)}, "snmp.hardware",
         ["entity 70516745: offline", "fan 30.2: abnormal"]),
    ],
)  # fmt: skip
async def test_huawei_s12704_faults(sim, served, tmp_path, changes, check, evidence):  # noqa: F811
    (inc,) = await healthy_then(sim, served, tmp_path, "huawei-s12704", changes, hospital_critical=True)
    assert (inc.evidence["check"], inc.severity, inc.scope) == (check, Severity.CRITICAL, Scope.HOSPITAL)
    if evidence:  # PWR1 offline and a fan: one incident
        assert inc.evidence["faults"] == evidence


# -- UPS cards ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "charge", "minutes", "volts", "not_provided"),
    [
        ("phoenixtec-ppc", 100, None, (238, 231), {"runtime"}),  # runtime 0 (both MIBs) at full charge
        ("eastpower-istars", 100, None, (None, None), {"runtime"}),  # runtime 0; voltages under a ".0" index
        ("huawei-gse200m", None, None, (236.9, 219.9), {"runtime", "charge"}),  # -1 and tenths of a volt
        ("eaton-93e", 100, 1092, (227, 220), set()),  # XUPS says 65535 s; UPS-MIB 1092 min
        ("apc-smartups-nmc", 100, round(3992500 / 6000, 1), (234, 220), {"alarms", "restarts"}),
        ("apc-galaxy-vs", 100, round(610800 / 6000, 1), (None, None), {"alarms"}),
    ],
)  # fmt: skip
async def test_ups_cards_healthy(sim, tmp_path, name, charge, minutes, volts, not_provided):  # noqa: F811
    obs = await run(sim, tmp_path, name, kind="ups")
    assert incidents(obs) == []
    d = one(obs, "snmp.ups.runtime_low").detail
    assert (d["charge_percent"], d["minutes_remaining"], (d["input_volts"], d["output_volts"])) == (
        charge, minutes, volts)  # fmt: skip
    aspects = {"restarts", "on_battery", "runtime", "charge", "bypass", "alarms", "battery"}
    assert set(one(obs, "snmp.coverage").detail["not_provided"]) & aspects == not_provided


ON_BATTERY, BYPASS = "on battery (mains lost)", "on bypass (load unprotected)"


def runs_out(minutes: str) -> str:
    return f"battery about to run out, {ON_BATTERY}, about {minutes} min left"


@pytest.mark.parametrize(
    ("name", "changes", "check", "words", "severity"),  # words: the title after "UPS <name> "
    [
        # On battery with its runtime object still at 0 and the battery full: on battery (its severity the
        # UPS's own impact: routine for one that serves no named department), not "0 min left" (critical).
        ("phoenixtec-ppc", {f"{UPSMIB}.4.1.0": (2, 5), f"{PPC}.4.1.1.0": (2, 3)}, "snmp.ups.on_battery",
         ON_BATTERY, Severity.ROUTINE),
        # ... and once the card says the battery is low, 0 minutes is what it means.
        ("phoenixtec-ppc", {f"{UPSMIB}.4.1.0": (2, 5), f"{UPSMIB}.2.1.0": (2, 3), f"{UPSMIB}.2.4.0": (2, 12)},
         "snmp.ups.depleting", runs_out("0"), Severity.CRITICAL),
        ("eastpower-istars", {f"{UPSMIB}.4.1.0": (2, 5)}, "snmp.ups.on_battery", ON_BATTERY, Severity.ROUTINE),
        ("huawei-gse200m", {f"{UPSMIB}.6.1.0": (66, 1), f"{UPSMIB}.6.2.1.2.1": (6, f"{UPSMIB}.6.3.8")},
         "snmp.ups.alarm", "alarm (outputOverload)", Severity.URGENT),
        ("huawei-gse200m", {f"{UPSMIB}.6.1.0": (66, 1), f"{UPSMIB}.6.2.1.2.1": (6, f"{UPSMIB}.6.3.9")},
         "snmp.ups.bypass", f"{BYPASS} (onBypass)", Severity.URGENT),
        ("eaton-93e", {f"{UPSMIB}.4.1.0": (2, 4)}, "snmp.ups.bypass", f"{BYPASS} (bypass)", Severity.URGENT),
        ("eaton-93e", {f"{UPSMIB}.4.1.0": (2, 5), f"{UPSMIB}.2.3.0": (2, 3)}, "snmp.ups.depleting", runs_out("3"),
         Severity.CRITICAL),
        ("apc-smartups-nmc", {f"{APC}.4.1.1.0": (2, 3), f"{APC}.2.2.3.0": (67, 24000)}, "snmp.ups.depleting",
         runs_out("4.0"), Severity.CRITICAL),
        ("apc-smartups-nmc", {f"{APC}.4.1.1.0": (2, 9)}, "snmp.ups.bypass", f"{BYPASS} (switchedBypass)",
         Severity.URGENT),
        ("apc-smartups-nmc", {f"{APC}.2.2.4.0": (2, 2)}, "snmp.ups.battery_fault",
         "battery failed or needs replacing (battery needs replacing)", Severity.URGENT),
        ("apc-galaxy-vs", {f"{APC}.4.1.1.0": (2, 10)}, "snmp.ups.bypass", f"{BYPASS} (hardwareFailureBypass)",
         Severity.URGENT),
        ("apc-galaxy-vs", {f"{APC}.4.1.1.0": (2, 7)}, "snmp.ups.output_off", "output off", Severity.URGENT),
    ],
)  # fmt: skip
async def test_ups_cards_faults(sim, served, tmp_path, name, changes, check, words, severity):  # noqa: F811
    (inc,) = await healthy_then(sim, served, tmp_path, name, changes, kind="ups")
    assert inc.trigger is Trigger.FORCE_MAJEURE and inc.title.en == f"UPS {name} {words}"
    assert (inc.severity, check in inc.evidence["conditions"]) == (severity, True), inc.evidence
