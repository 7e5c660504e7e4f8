"""Keeping the agent's resident memory small.

glibc (Linux) gives each thread that allocates its own malloc arena (up to 8 per core), and keeps
pages freed by start-up mapped until asked to return them. The agent caps the arenas before its
first thread starts and trims the heap after start-up and after each heartbeat. Elsewhere
(Windows, musl) these calls do nothing and say so (False).

pydantic looks for plugins (package entry points) when it builds its first model, importing
importlib.metadata with email, zipfile, csv and the archive modules for it (~2 MB). The agent
uses none: `skip_pydantic_plugins()`, called before any model is built, answers "no plugins"
as PYDANTIC_DISABLE_PLUGINS=__all__ would, without the search.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import sys
import types
from typing import Any

log = logging.getLogger("hisguard.agent.memory")

M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
ARENAS = 2  # the event loop's thread and one shared by every worker thread


def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, ValueError, AttributeError):
        return None
    return libc


_libc: Any | None = _glibc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (threads share them). Call before threads start; True if applied."""
    if _libc is None:
        return False
    try:
        return bool(_libc.mallopt(M_ARENA_MAX, arenas))
    except Exception:  # an odd libc: memory tuning is never worth a failure
        log.debug("mallopt(M_ARENA_MAX) failed", exc_info=True)
        return False


def release() -> bool:
    """Collect garbage cycles and return the heap's free pages to the system; True if trimmed."""
    gc.collect()
    if _libc is None:
        return False
    try:
        _libc.malloc_trim(0)
    except Exception:
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True


def settle() -> bool:
    """After start-up: what survives it (modules, config, the SNMP engine) is moved out of the
    collector's sight, so later collections walk only what rounds allocate; then trim."""
    gc.collect()
    gc.freeze()
    return release()


PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def skip_pydantic_plugins() -> bool:
    """No pydantic plugins in this process, and no search for them; True if in place (False: too late,
    a model was built already and pydantic has looked)."""
    if PYDANTIC_PLUGIN_LOADER in sys.modules:
        return False
    loader = types.ModuleType(PYDANTIC_PLUGIN_LOADER, "The agent loads no pydantic plugins.")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]

    def anything_else(name: str) -> Any:
        # A pydantic release that wants more of its loader gets the real one (only the saving is lost).
        if name.startswith("__"):
            raise AttributeError(name)  # the import system's own probes
        if sys.modules.get(PYDANTIC_PLUGIN_LOADER) is loader:
            del sys.modules[PYDANTIC_PLUGIN_LOADER]
        return getattr(importlib.import_module(PYDANTIC_PLUGIN_LOADER), name)

    loader.__getattr__ = anything_else  # type: ignore[attr-defined]
    sys.modules[PYDANTIC_PLUGIN_LOADER] = loader
    return True
