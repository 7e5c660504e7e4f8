"""Skip-or-fail for tests that need a real peer: on a laptop they skip, in CI they must run."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE = os.environ.get("HISGUARD_REQUIRE_PEERS") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip when `condition` is false, unless CI requires every peer (then fail loudly)."""
    if condition:
        return
    if REQUIRE:
        pytest.fail(f"required peer missing in CI: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces, raw ICMP)")


def need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    need(path is not None, f"needs the {name} program (Debian package; scripts/test.sh installs it)")
    assert path is not None
    return path
