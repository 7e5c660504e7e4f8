"""SNMP requests over one long-lived pysnmp engine (a cold engine costs hundreds of ms; a warm poll a few).

Numeric OIDs only and no MIB lookups (no MIB compiler needed). Every failure becomes an
`SnmpError` that says what happened in words an engineer can act on.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import ipaddress
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

# pysnmp imports its ciphers (the `cryptography` package, ~7 MB resident) up front although only
# SNMPv3 privacy uses them: they are held back here and loaded by `enable_privacy()` when a v3
# user is configured. A process that already has `cryptography` loaded imports pysnmp as is.
_PRIV_MODULES = (
    "pysnmp.proto.secmod.rfc3826.priv.aes",
    "pysnmp.proto.secmod.rfc3414.priv.des",
    "pysnmp.proto.secmod.eso.priv.des3",
)
_HOLD_CIPHERS = "cryptography" not in sys.modules
if _HOLD_CIPHERS:
    sys.modules["cryptography"] = None  # type: ignore[assignment]
try:
    from pyasn1.type.univ import Null
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        UsmUserData,
        bulk_cmd,
        get_cmd,
    )
    from pysnmp.hlapi.v3arch.asyncio import auth as _auth
    from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

    AUTH_PROTOCOLS = {
        "MD5": _auth.USM_AUTH_HMAC96_MD5,
        "SHA": _auth.USM_AUTH_HMAC96_SHA,
        "SHA256": _auth.USM_AUTH_HMAC192_SHA256,
        "SHA512": _auth.USM_AUTH_HMAC384_SHA512,
    }
    PRIV_PROTOCOLS = {
        "AES": _auth.USM_PRIV_CFB128_AES,
        "AES256": _auth.USM_PRIV_CFB256_AES,
        "DES": _auth.USM_PRIV_CBC56_DES,
    }

    class _Target(UdpTransportTarget):
        """A UDP target; an IPv4 address as such needs no resolver (a thread of the event loop's pool)."""

        async def _resolve_address(self, transportAddr: tuple[Any, ...]) -> tuple[str, int]:
            try:
                return str(ipaddress.IPv4Address(transportAddr[0])), int(transportAddr[1])
            except ValueError:
                return await super()._resolve_address(transportAddr)

except ImportError as exc:  # installed without the snmp extra: every request says how to fix it
    _MISSING: ImportError | None = exc
    AUTH_PROTOCOLS: dict[str, Any] = {}
    PRIV_PROTOCOLS: dict[str, Any] = {}
else:
    _MISSING = None
finally:
    if _HOLD_CIPHERS and sys.modules.get("cryptography", 0) is None:
        del sys.modules["cryptography"]
_privacy = not _HOLD_CIPHERS


def enable_privacy() -> None:
    """Load SNMPv3's ciphers (AES, DES) into pysnmp; the first SNMPv3 user configured calls this."""
    global _privacy
    if _privacy or _MISSING is not None:
        return
    try:
        import cryptography.hazmat.primitives.ciphers  # noqa: F401
    except ImportError as exc:
        raise SnmpError(f"SNMPv3 privacy needs the cryptography package ({exc}): pip install 'hisguard[snmp]'") from exc
    for name in _PRIV_MODULES:  # re-run their imports, now that the ciphers can load
        module = sys.modules.get(name)
        if module is not None:
            importlib.reload(module)
            if getattr(module, "PysnmpCryptoError", False):
                raise SnmpError(f"SNMPv3 privacy: {name} cannot load its ciphers")
    _privacy = True


class SnmpError(Exception):
    """A request failed. `silent` is True when nothing answered at all (timeout)."""

    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


@dataclass(frozen=True)
class Credentials:
    version: str  # "2c" or "3"
    community: str = "public"
    user: str = ""
    auth_protocol: str = "SHA"
    auth_key: str | None = None
    priv_protocol: str = "AES"
    priv_key: str | None = None
    context: str = ""


_engine: SnmpEngine | None = None
_engine_loop: asyncio.AbstractEventLoop | None = None
_targets: dict[tuple[str, int, float, int], UdpTransportTarget] = {}
_auth_cache: dict[Credentials, Any] = {}
_mibs_cached = False


def _mib_bytecode() -> None:
    """pysnmp compiles every MIB module an engine loads from source, twice (as if run in a debugger):
    take the code from Python's bytecode cache instead, as `python -O` runs them (~40 ms and ~0.5 MB
    of heap less per engine)."""
    global _mibs_cached
    if _mibs_cached:
        return
    _mibs_cached = True
    try:
        from pysnmp.smi import builder

        read = builder.DirMibSource.read
        runpy = builder.runpy
    except (ImportError, AttributeError):  # another pysnmp layout: leave it as it is
        return

    def code(path: str) -> Any:
        name = os.path.basename(path)[:-3]
        return importlib.machinery.SourceFileLoader(name, path).get_code(name)

    def cached_read(source: Any, name: str) -> tuple[Any, str]:
        path = os.path.join(getattr(source, "_srcName", ""), name + ".py")
        if os.path.isfile(path):
            try:
                return code(path), ".py"
            except (OSError, ImportError, SyntaxError):
                pass
        return read(source, name)  # type: ignore[no-any-return]

    def run_path(path: str, init_globals: dict[str, Any] | None = None, run_name: str | None = None) -> Any:
        if not str(path).endswith(".py") or init_globals is None:
            return runpy.run_path(path, init_globals, run_name)
        init_globals.setdefault("__name__", run_name or "<run_path>")
        init_globals.setdefault("__file__", path)
        exec(code(path), init_globals)
        return init_globals

    builder.DirMibSource.read = cached_read
    builder.runpy = SimpleNamespace(run_path=run_path)


def engine() -> SnmpEngine:
    """The process's one engine (a new one only if the event loop changed, as between tests)."""
    global _engine, _engine_loop
    if _MISSING is not None:
        raise SnmpError(f"SNMP support is not installed ({_MISSING}): pip install 'hisguard[snmp]'")
    loop = asyncio.get_running_loop()
    if _engine is None or _engine_loop is not loop:
        if _engine is not None:
            try:
                _engine.close_dispatcher()
            except Exception:  # the old loop is gone; nothing to release
                pass
        _mib_bytecode()
        _engine, _engine_loop = SnmpEngine(), loop
        _targets.clear()
    return _engine


def auth_data(cred: Credentials) -> Any:
    data = _auth_cache.get(cred)
    if data is None:
        if cred.version == "3":
            if cred.priv_key:
                enable_privacy()
            data = UsmUserData(
                cred.user,
                authKey=cred.auth_key,
                privKey=cred.priv_key,
                authProtocol=AUTH_PROTOCOLS[cred.auth_protocol] if cred.auth_key else _auth.USM_AUTH_NONE,
                privProtocol=PRIV_PROTOCOLS[cred.priv_protocol] if cred.priv_key else _auth.USM_PRIV_NONE,
            )
        else:
            data = CommunityData(cred.community, mpModel=1)
        _auth_cache[cred] = data
    return data


async def target(address: str, port: int, timeout: float, retries: int) -> UdpTransportTarget:
    key = (address, port, timeout, retries)
    t = _targets.get(key)
    if t is None:
        try:
            t = await _Target.create((address, port), timeout=timeout, retries=retries)
        except Exception as exc:
            raise SnmpError(f"cannot resolve {address}: {exc}") from exc
        _targets[key] = t
    return t


def _explain(indication: Any) -> SnmpError:
    text = str(indication)
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        return SnmpError("no SNMP answer (timed out)", silent=True)
    if "unknown" in low and "user" in low:
        return SnmpError(f"SNMPv3 user unknown to the device ({text})")
    if "digest" in low or "authentication" in low:
        return SnmpError(f"SNMPv3 authentication failed: wrong auth key or protocol ({text})")
    if "decrypt" in low or "privacy" in low or "cipher" in low:
        return SnmpError(f"SNMPv3 decryption failed: wrong privacy key or protocol ({text})")
    if "context" in low:
        return SnmpError(f"SNMPv3 context not known to the device ({text})")
    return SnmpError(f"SNMP error: {text}")


class Session:
    """Requests to one device with its credentials, timeout and retries."""

    def __init__(self, address: str, port: int, cred: Credentials, timeout: float, retries: int) -> None:
        self.address, self.port, self.cred = address, port, cred
        self.timeout, self.retries = timeout, retries
        if _MISSING is not None:
            raise SnmpError(f"SNMP support is not installed ({_MISSING}): pip install 'hisguard[snmp]'")
        self.context = ContextData(contextName=cred.context.encode()) if cred.context else ContextData()
        self.asking: list[str] = []  # the OIDs of the request under way (named in errors and timeouts)

    async def _send(self, fn: Any, *args: Any) -> tuple[Any, ...]:
        eng = engine()
        tgt = await target(self.address, self.port, self.timeout, self.retries)
        try:
            ind, status, index, binds = await fn(eng, auth_data(self.cred), tgt, self.context, *args, lookupMib=False)
        except SnmpError:
            raise
        except Exception as exc:  # pysnmp raises for malformed answers and local misconfiguration
            raise SnmpError(f"SNMP request for {self.asked()} failed: {exc.__class__.__name__}: {exc}") from exc
        if ind:
            err = _explain(ind)
            raise SnmpError(f"{err} (asking {self.asked()})", silent=err.silent)
        if status:
            raise SnmpError(f"device refused the request: {status.prettyPrint()} at varbind {int(index)}")
        return tuple(binds)

    def asked(self) -> str:
        from hisguard.checks.snmp.oids import name

        return ", ".join(name(o) for o in self.asking[:3]) + (" …" if len(self.asking) > 3 else "")

    async def get(self, oids: list[str]) -> dict[str, Any]:
        """Values by OID; an OID the device does not have is absent from the result."""
        self.asking = list(oids)
        binds = await self._send(get_cmd, *[ObjectType(ObjectIdentity(o), Null()) for o in oids])
        out = {}
        for name, value in binds:
            if isinstance(value, (NoSuchObject, NoSuchInstance, EndOfMibView)):
                continue
            out[str(name)] = value
        return out

    async def columns(
        self, cols: list[str], max_repetitions: int = 25, max_rows: int = 5000
    ) -> dict[str, dict[str, Any]]:
        """Walk table columns side by side with GETBULK: {column: {index: value}}."""
        from hisguard.checks.snmp.oids import name as oid_name

        result: dict[str, dict[str, Any]] = {c: {} for c in cols}
        prefixes = {c: c + "." for c in cols}
        cursor = {c: c for c in cols}
        active = list(cols)
        rows = 0
        while active:
            self.asking = list(active)
            binds = await self._send(
                bulk_cmd, 0, max_repetitions, *[ObjectType(ObjectIdentity(cursor[c]), Null()) for c in active]
            )
            if not binds:
                break
            done: set[str] = set()
            for i, (name, value) in enumerate(binds):
                col = active[i % len(active)]
                if col in done:
                    continue
                oid = str(name)
                if isinstance(value, EndOfMibView) or not oid.startswith(prefixes[col]):
                    done.add(col)
                    continue
                if cursor[col] != col and _oid_key(oid) <= _oid_key(cursor[col]):
                    raise SnmpError(f"walk of {oid_name(col)}: OIDs out of order (broken SNMP agent)")
                result[col][oid[len(prefixes[col]) :]] = value
                cursor[col] = oid
            rows += len(binds) // max(1, len(active))
            active = [c for c in active if c not in done]
            if rows > max_rows:
                raise SnmpError(f"walk of {oid_name(cols[0])} did not end after {max_rows} rows: stopped")
        return result


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))
