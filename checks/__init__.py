"""The probes, one module a protocol, each exporting `Config` and `probe` (see base.py).

`PROBES` is the table of names. Modules load on first use so an agent carries only what it runs.
"""

from __future__ import annotations

import importlib

from hisguard.checks.base import Impact, Observation, ProbeBusy, ProbeConfig, ProbeContext, ProbeError, ProbeSpec

PROBES: dict[str, str] = {
    "host": "hisguard.checks.host",
    "ping": "hisguard.checks.ping",
    "database": "hisguard.checks.database",
    "snmp": "hisguard.checks.snmp",  # switches, servers and UPS units over SNMP; trap receiver
    "antivirus": "hisguard.checks.antivirus",
    "canary": "hisguard.checks.canary",
    "winevent": "hisguard.checks.winevent",
    "service": "hisguard.checks.service",  # is the HIS application answering: tcp, http(s), tls, dns, mllp, dicom
}


def load(name: str) -> ProbeSpec:
    """The probe registered under `name` (KeyError if there is none)."""
    module = importlib.import_module(PROBES[name])
    return ProbeSpec(name=name, config=module.Config, run=module.probe, watch=getattr(module, "watch", None))


__all__ = [
    "PROBES",
    "Impact",
    "Observation",
    "ProbeBusy",
    "ProbeConfig",
    "ProbeContext",
    "ProbeError",
    "ProbeSpec",
    "load",
]
