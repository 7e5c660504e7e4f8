"""Numeric OIDs the SNMP probe reads (no MIB compiler at run time; see reference/probes.md §5)."""

from __future__ import annotations

# SNMPv2-MIB
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"

# IF-MIB ifTable / ifXTable / ifStackTable columns
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_TYPE = "1.3.6.1.2.1.2.2.1.3"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_LAST_CHANGE = "1.3.6.1.2.1.2.2.1.9"
IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"
IF_OUT_ERRORS = "1.3.6.1.2.1.2.2.1.20"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.18"
IF_STACK_STATUS = "1.3.6.1.2.1.31.1.2.1.3"  # index: higher ifIndex . lower ifIndex
IF_UP, IF_DOWN, IF_DORMANT = 1, 2, 5
IF_TYPE_LOOPBACK, IF_TYPE_LAG = 24, 161

# ENTITY-MIB, ENTITY-SENSOR-MIB (RFC 3433), ENTITY-STATE-MIB (RFC 4268)
ENT_DESCR = "1.3.6.1.2.1.47.1.1.1.1.2"
ENT_CLASS = "1.3.6.1.2.1.47.1.1.1.1.5"
ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.7"
ENT_CLASS_NAMES = {3: "chassis", 5: "container", 6: "power supply", 7: "fan", 8: "sensor", 9: "module", 12: "cpu"}
SENSOR_TYPE = "1.3.6.1.2.1.99.1.1.1.1"  # celsius 8, rpm 10
SENSOR_SCALE = "1.3.6.1.2.1.99.1.1.1.2"  # units 9; exponent = (scale - 9) * 3
SENSOR_PRECISION = "1.3.6.1.2.1.99.1.1.1.3"
SENSOR_VALUE = "1.3.6.1.2.1.99.1.1.1.4"
SENSOR_OPER = "1.3.6.1.2.1.99.1.1.1.5"  # ok 1, unavailable 2, nonoperational 3
SENSOR_CELSIUS, SENSOR_RPM = 8, 10
SENSOR_OK, SENSOR_UNAVAILABLE, SENSOR_NONOPERATIONAL = 1, 2, 3
STATE_ADMIN = "1.3.6.1.2.1.131.1.1.1.2"  # unknown 1, locked 2, shuttingDown 3, unlocked 4
STATE_OPER = "1.3.6.1.2.1.131.1.1.1.3"  # unknown 1, disabled 2, enabled 3, testing 4
STATE_DISABLED, STATE_LOCKED = 2, 2

# HOST-RESOURCES-MIB (servers: Linux/Windows SNMP agents)
HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"
HR_STORAGE_TYPE = "1.3.6.1.2.1.25.2.3.1.2"
HR_STORAGE_DESCR = "1.3.6.1.2.1.25.2.3.1.3"
HR_STORAGE_UNITS = "1.3.6.1.2.1.25.2.3.1.4"
HR_STORAGE_SIZE = "1.3.6.1.2.1.25.2.3.1.5"
HR_STORAGE_USED = "1.3.6.1.2.1.25.2.3.1.6"
HR_STORAGE_RAM = "1.3.6.1.2.1.25.2.1.2"
HR_CACHE_DESCRS = ("memory buffers", "cached memory")  # net-snmp: part of "used", given back on demand

# Huawei HUAWEI-ENTITY-EXTENT-MIB hwEntityStateTable, indexed by entPhysicalIndex.
HUAWEI_OPER = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.2"  # notSupported 1 disabled 2 enabled 3 offline 4 … down 12 absent 19
HUAWEI_CPU = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5"
HUAWEI_CPU_THRESHOLD = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.6"
HUAWEI_MEM = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.7"
HUAWEI_MEM_THRESHOLD = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.8"
HUAWEI_TEMP = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.11"
HUAWEI_TEMP_THRESHOLD = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.12"
HUAWEI_OPER_FAULT = {2: "disabled", 4: "offline", 12: "down"}
HUAWEI_FAN_STATE = "1.3.6.1.4.1.2011.5.25.31.1.1.10.1.7"  # hwEntityFanState: normal 1, abnormal 2
HUAWEI_POWER_STATE = "1.3.6.1.4.1.2011.5.25.31.1.1.18.1.6"  # hwEntityPwrState: supply 1, notSupply 2, sleep 3
# H3C HH3C-ENTITY-EXT-MIB hh3cEntityExtStateTable, indexed by entPhysicalIndex.
H3C_OPER = "1.3.6.1.4.1.25506.2.6.1.1.1.1.3"  # notSupported 1 disabled 2 enabled 3 dangerous 4
H3C_CPU = "1.3.6.1.4.1.25506.2.6.1.1.1.1.6"
H3C_CPU_THRESHOLD = "1.3.6.1.4.1.25506.2.6.1.1.1.1.7"
H3C_MEM = "1.3.6.1.4.1.25506.2.6.1.1.1.1.8"
H3C_MEM_THRESHOLD = "1.3.6.1.4.1.25506.2.6.1.1.1.1.9"
H3C_TEMP = "1.3.6.1.4.1.25506.2.6.1.1.1.1.12"
H3C_TEMP_THRESHOLD = "1.3.6.1.4.1.25506.2.6.1.1.1.1.13"
H3C_ERROR = "1.3.6.1.4.1.25506.2.6.1.1.1.1.19"
# The same table under H3C's older arc (H3C-ENTITY-EXT-MIB, 2011.10): some Comware 5 devices answer
# there and not under 25506 (a real E528 on Comware 5.20 does).
H3C_NEW_ARC, H3C_OLD_ARC = "1.3.6.1.4.1.25506.2.6.1.1.1.1.", "1.3.6.1.4.1.2011.10.2.6.1.1.1.1."
H3C_COLUMNS = (
    H3C_OPER, H3C_CPU, H3C_CPU_THRESHOLD, H3C_MEM, H3C_MEM_THRESHOLD, H3C_TEMP, H3C_TEMP_THRESHOLD, H3C_ERROR,
)  # fmt: skip
H3C_OLD = {c: c.replace(H3C_NEW_ARC, H3C_OLD_ARC) for c in H3C_COLUMNS}
H3C_ERROR_OK = {1, 2, 4}  # notSupported, normal, entityAbsent (an empty slot is not a fault)
H3C_ERROR_NAMES = {
    3: "postFailure",
    11: "entityDisabled",
    41: "fanError",
    51: "psuError",
    61: "rpsError",
    71: "moduleFaulty",
    81: "sensorError",
    91: "hardwareFaulty",
}
# Cisco CISCO-PROCESS-MIB, CISCO-ENVMON-MIB
CISCO_CPU_5MIN = "1.3.6.1.4.1.9.9.109.1.1.1.1.8"
CISCO_MEM_USED = "1.3.6.1.4.1.9.9.109.1.1.1.1.12"
CISCO_MEM_FREE = "1.3.6.1.4.1.9.9.109.1.1.1.1.13"
CISCO_TEMP_DESCR = "1.3.6.1.4.1.9.9.13.1.3.1.2"
CISCO_TEMP_VALUE = "1.3.6.1.4.1.9.9.13.1.3.1.3"
CISCO_TEMP_THRESHOLD = "1.3.6.1.4.1.9.9.13.1.3.1.4"
CISCO_TEMP_STATE = "1.3.6.1.4.1.9.9.13.1.3.1.6"
CISCO_FAN_DESCR = "1.3.6.1.4.1.9.9.13.1.4.1.2"
CISCO_FAN_STATE = "1.3.6.1.4.1.9.9.13.1.4.1.3"
CISCO_SUPPLY_DESCR = "1.3.6.1.4.1.9.9.13.1.5.1.2"
CISCO_SUPPLY_STATE = "1.3.6.1.4.1.9.9.13.1.5.1.3"
CISCO_STATE_OK = {1, 5}  # normal, notPresent
CISCO_STATE_NAMES = {1: "normal", 2: "warning", 3: "critical", 4: "shutdown", 5: "notPresent", 6: "notFunctioning"}
# CISCO-MEMORY-POOL-MIB: IOS 12.x has no cpmCPUMemoryUsed/Free; its memory is per pool (Processor, I/O).
CISCO_POOL_NAME = "1.3.6.1.4.1.9.9.48.1.1.1.2"
CISCO_POOL_USED = "1.3.6.1.4.1.9.9.48.1.1.1.5"
CISCO_POOL_FREE = "1.3.6.1.4.1.9.9.48.1.1.1.6"

# sysObjectID enterprise prefixes
ENTERPRISES = {  # first match wins: H3C's older arc sits under Huawei's enterprise number
    "1.3.6.1.4.1.2011.10.": "h3c",
    "1.3.6.1.4.1.2011.": "huawei",
    "1.3.6.1.4.1.25506.": "h3c",
    "1.3.6.1.4.1.9.": "cisco",
    "1.3.6.1.4.1.4881.": "ruijie",
    "1.3.6.1.4.1.3902.": "zte",
    "1.3.6.1.4.1.5651.": "maipu",
    "1.3.6.1.4.1.318.": "apc",
    "1.3.6.1.4.1.534.": "eaton",
    "1.3.6.1.4.1.705.": "eaton",
    "1.3.6.1.4.1.935.": "megatec",
}

# UPS-MIB (RFC 1628)
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"  # unknown1 normal2 low3 depleted4
UPS_SECONDS_ON_BATTERY = "1.3.6.1.2.1.33.1.2.2.0"
UPS_MINUTES_REMAINING = "1.3.6.1.2.1.33.1.2.3.0"
UPS_CHARGE_REMAINING = "1.3.6.1.2.1.33.1.2.4.0"
UPS_INPUT_VOLTAGE_1 = "1.3.6.1.2.1.33.1.3.3.1.3.1"
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"  # other1 none2 normal3 bypass4 battery5 booster6 reducer7
UPS_OUTPUT_VOLTAGE_1 = "1.3.6.1.2.1.33.1.4.4.1.2.1"
UPS_ALARMS_PRESENT = "1.3.6.1.2.1.33.1.6.1.0"
UPS_ALARM_DESCR = "1.3.6.1.2.1.33.1.6.2.1.2"  # column: OID of a well-known alarm
UPS_WELL_KNOWN_ALARM = "1.3.6.1.2.1.33.1.6.3."
UPS_ALARM_NAMES = {
    1: "batteryBad", 2: "onBattery", 3: "lowBattery", 4: "depletedBattery", 5: "tempBad", 6: "inputBad",
    7: "outputBad", 8: "outputOverload", 9: "onBypass", 10: "bypassBad", 11: "outputOffAsRequested",
    12: "upsOffAsRequested", 13: "chargerFailed", 14: "upsOutputOff", 15: "upsSystemOff", 16: "fanFailure",
    17: "fuseFailure", 18: "generalFault", 19: "diagnosticTestFailed", 20: "communicationsLost",
    21: "awaitingPower", 22: "shutdownPending", 23: "shutdownImminent", 24: "testInProgress",
}  # fmt: skip
UPS_SOURCE_NONE, UPS_SOURCE_BYPASS, UPS_SOURCE_BATTERY = 2, 4, 5
# APC PowerNet-MIB
APC_BATTERY_STATUS = "1.3.6.1.4.1.318.1.1.1.2.1.1.0"  # unknown1 normal2 low3 inFault4 noBattery5
APC_CAPACITY = "1.3.6.1.4.1.318.1.1.1.2.2.1.0"
APC_RUNTIME = "1.3.6.1.4.1.318.1.1.1.2.2.3.0"  # TimeTicks
APC_REPLACE = "1.3.6.1.4.1.318.1.1.1.2.2.4.0"  # noBatteryNeedsReplacing1 batteryNeedsReplacing2
APC_INPUT_VOLTAGE = "1.3.6.1.4.1.318.1.1.1.3.2.1.0"
APC_OUTPUT_STATUS = "1.3.6.1.4.1.318.1.1.1.4.1.1.0"
APC_OUTPUT_VOLTAGE = "1.3.6.1.4.1.318.1.1.1.4.2.1.0"
APC_ON_BATTERY = 3
APC_BYPASS = {6: "softwareBypass", 9: "switchedBypass", 10: "hardwareFailureBypass", 16: "emergencyStaticBypass"}
APC_OFF = {5: "timedSleeping", 7: "off", 11: "sleepingUntilPowerReturn"}
# Eaton XUPS-MIB
XUPS_TIME_REMAINING = "1.3.6.1.4.1.534.1.2.1.0"  # seconds
XUPS_CAPACITY = "1.3.6.1.4.1.534.1.2.4.0"
XUPS_INPUT_VOLTAGE_1 = "1.3.6.1.4.1.534.1.3.4.1.2.1"
XUPS_OUTPUT_VOLTAGE_1 = "1.3.6.1.4.1.534.1.4.4.1.2.1"
XUPS_OUTPUT_SOURCE = "1.3.6.1.4.1.534.1.4.5.0"  # UPS-MIB's enumeration, plus maintenanceBypass11
XUPS_ALARMS = "1.3.6.1.4.1.534.1.7.1.0"  # number of active alarms
XUPS_BYPASS = {4: "bypass", 11: "maintenanceBypass"}
# PPC (Megatec NetAgent cards, many Chinese UPS brands), enterprise 935
PPC_BATTERY_STATUS = "1.3.6.1.4.1.935.1.1.1.2.1.1.0"  # unknown1 batteryNormal2 batteryLow3
PPC_CAPACITY = "1.3.6.1.4.1.935.1.1.1.2.2.1.0"
PPC_RUNTIME = "1.3.6.1.4.1.935.1.1.1.2.2.4.0"  # seconds
PPC_REPLACE = "1.3.6.1.4.1.935.1.1.1.2.2.5.0"  # noBatteryNeedsReplacing1 batteryNeedsReplacing2
PPC_INPUT_VOLTAGE = "1.3.6.1.4.1.935.1.1.1.3.2.1.0"  # tenths of a volt
PPC_OUTPUT_STATUS = "1.3.6.1.4.1.935.1.1.1.4.1.1.0"  # see PPC_STATUS_NAMES
PPC_OUTPUT_VOLTAGE = "1.3.6.1.4.1.935.1.1.1.4.2.1.0"  # tenths of a volt
PPC_STATUS_NAMES = {
    1: "unknown", 2: "onLine", 3: "onBattery", 4: "onBoost", 5: "sleeping", 6: "onBypass",
    7: "rebooting", 8: "standBy", 9: "onBuck",
}  # fmt: skip

# Notifications (snmpTrapOID.0 values)
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
WARM_START = "1.3.6.1.6.3.1.1.5.2"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
UPS_TRAP_ON_BATTERY = "1.3.6.1.2.1.33.2.1"
UPS_TRAP_ALARM_ADDED = "1.3.6.1.2.1.33.2.3"
APC_TRAP_ON_BATTERY = "1.3.6.1.4.1.318.0.5"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"

# Names for error messages (an engineer reads "ifOperStatus", not a number).
NAMES = {
    SYS_UPTIME: "sysUpTime.0",
    SYS_OBJECT_ID: "sysObjectID.0",
    IF_OPER: "ifOperStatus",
    IF_DESCR: "ifDescr",
    IF_NAME: "ifName",
    IF_ALIAS: "ifAlias",
    IF_TYPE: "ifType",
    IF_STACK_STATUS: "ifStackStatus",
    SENSOR_TYPE: "entPhySensorType",
    SENSOR_VALUE: "entPhySensorValue",
    STATE_OPER: "entStateOper",
    HR_PROCESSOR_LOAD: "hrProcessorLoad",
    HR_STORAGE_TYPE: "hrStorageType",
    HUAWEI_CPU: "hwEntityCpuUsage",
    HUAWEI_TEMP: "hwEntityTemperature",
    H3C_TEMP: "hh3cEntityExtTemperature",
    CISCO_CPU_5MIN: "cpmCPUTotal5minRev",
    CISCO_TEMP_VALUE: "ciscoEnvMonTemperatureStatusValue",
    CISCO_POOL_USED: "ciscoMemoryPoolUsed",
    UPS_ALARM_DESCR: "upsAlarmDescr",
}


def name(oid: str) -> str:
    """`ifOperStatus (1.3.6.1.2.1.2.2.1.8)` for an OID the probe knows, else the OID."""
    known = NAMES.get(oid)
    return f"{known} ({oid})" if known else oid
