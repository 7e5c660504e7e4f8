"""Numeric OIDs the SNMP probe reads (no MIB compiler at run time; see reference/probes.md §5)."""

from __future__ import annotations

# SNMPv2-MIB
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"

# IF-MIB ifTable / ifXTable columns
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_TYPE = "1.3.6.1.2.1.2.2.1.3"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_LAST_CHANGE = "1.3.6.1.2.1.2.2.1.9"
IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"
IF_OUT_ERRORS = "1.3.6.1.2.1.2.2.1.20"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.18"
IF_UP, IF_DOWN = 1, 2
IF_TYPE_LOOPBACK = 24

# HOST-RESOURCES-MIB hrProcessorLoad (servers, Linux/Windows SNMP agents)
HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"

# Vendor CPU / memory / temperature tables, indexed by entPhysicalIndex.
HUAWEI_CPU = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5"
HUAWEI_MEM = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.7"
HUAWEI_TEMP = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.11"
H3C_CPU = "1.3.6.1.4.1.25506.2.6.1.1.1.1.6"
H3C_MEM = "1.3.6.1.4.1.25506.2.6.1.1.1.1.8"
H3C_TEMP = "1.3.6.1.4.1.25506.2.6.1.1.1.1.12"
H3C_ERROR = "1.3.6.1.4.1.25506.2.6.1.1.1.1.19"
H3C_ERROR_OK = {2, 4}  # normal, entityAbsent (an empty slot is not a fault)
CISCO_CPU_5MIN = "1.3.6.1.4.1.9.9.109.1.1.1.1.8"
CISCO_MEM_USED = "1.3.6.1.4.1.9.9.109.1.1.1.1.12"
CISCO_MEM_FREE = "1.3.6.1.4.1.9.9.109.1.1.1.1.13"
CISCO_TEMP_VALUE = "1.3.6.1.4.1.9.9.13.1.3.1.3"
CISCO_FAN_STATE = "1.3.6.1.4.1.9.9.13.1.4.1.3"
CISCO_SUPPLY_STATE = "1.3.6.1.4.1.9.9.13.1.5.1.3"
CISCO_STATE_OK = {1, 5}  # normal, notPresent
CISCO_STATE_NAMES = {1: "normal", 2: "warning", 3: "critical", 4: "shutdown", 5: "notPresent", 6: "notFunctioning"}

# sysObjectID enterprise prefixes
ENTERPRISES = {
    "1.3.6.1.4.1.2011.": "huawei",
    "1.3.6.1.4.1.25506.": "h3c",
    "1.3.6.1.4.1.9.": "cisco",
    "1.3.6.1.4.1.318.": "apc",
    "1.3.6.1.4.1.534.": "eaton",
    "1.3.6.1.4.1.705.": "eaton",
}

# UPS-MIB (RFC 1628)
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"  # unknown1 normal2 low3 depleted4
UPS_SECONDS_ON_BATTERY = "1.3.6.1.2.1.33.1.2.2.0"
UPS_MINUTES_REMAINING = "1.3.6.1.2.1.33.1.2.3.0"
UPS_CHARGE_REMAINING = "1.3.6.1.2.1.33.1.2.4.0"
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"  # battery5
UPS_SOURCE_BATTERY = 5
# APC PowerNet
APC_OUTPUT_STATUS = "1.3.6.1.4.1.318.1.1.1.4.1.1.0"  # onBattery3
APC_BATTERY_STATUS = "1.3.6.1.4.1.318.1.1.1.2.1.1.0"  # normal2 low3 inFault4 noBattery5
APC_CAPACITY = "1.3.6.1.4.1.318.1.1.1.2.2.1.0"
APC_RUNTIME = "1.3.6.1.4.1.318.1.1.1.2.2.3.0"  # TimeTicks
APC_ON_BATTERY = 3
# Eaton XUPS-MIB (the UPS recording snmpsim ships)
XUPS_TIME_REMAINING = "1.3.6.1.4.1.534.1.2.1.0"  # seconds
XUPS_CAPACITY = "1.3.6.1.4.1.534.1.2.4.0"
XUPS_OUTPUT_SOURCE = "1.3.6.1.4.1.534.1.4.5.0"  # same enumeration as upsOutputSource

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
