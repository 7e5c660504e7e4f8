"""SNMP probe (pysnmp, asyncio): switches, servers and UPS units — interfaces, restarts, health, power.

One file a concern: `config` (devices and limits), `polling` (the round, reachability, restarts),
`interfaces`, `health`, `ups`, `traps` (the receiver), `client` (requests) and `oids`.
Per device, v2c or v3 (authPriv), its own timeout and retries. What it reports:
- snmp.reachable / snmp.unreached   neither SNMP nor ping answers (trigger 1); unreached: never seen up;
- snmp.agent       ping answers but SNMP is silent: management software failure (trigger 2);
- snmp.interface   a watched port is down, by ifIndex; snmp.uplink_redundancy / snmp.uplink_group for
                   redundant uplinks (LAG members or uplink_groups); snmp.if_errors, snmp.if_flap;
- snmp.restart / snmp.restart.late / snmp.reboot_loop   sysUpTime reset (also across agent restarts);
- snmp.cpu / snmp.memory / snmp.temperature / snmp.hardware   standard MIBs, then vendor tables;
- snmp.ups.*       on battery, runtime low, depleting, bypass, output off, alarm, battery fault;
- snmp.coverage    per device, which aspects are read and which this device does not provide.
A device the probe cannot read (wrong community or keys, garbage, a walk that never ends, an
ambiguous uplink) is a probe error naming the device (snmp.error), never an incident.
"""

from __future__ import annotations

from hisguard.checks.base import Emit, ProbeContext
from hisguard.checks.snmp.config import V3, Config, Device
from hisguard.checks.snmp.polling import DeviceError, State, probe, restart_observations, state


async def watch(cfg: Config, ctx: ProbeContext, emit: Emit) -> None:
    """The trap receiver, when enabled: traps become observations at once and ask for a confirming poll."""
    if not cfg.traps:
        return
    from hisguard.checks.snmp.traps import TrapReceiver

    receiver = TrapReceiver(cfg, ctx, emit)
    await receiver.serve()


__all__ = ["V3", "Config", "Device", "DeviceError", "State", "probe", "restart_observations", "state", "watch"]
