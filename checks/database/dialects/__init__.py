"""The dialect layer: one module per server family, each holding every statement it sends."""

from __future__ import annotations

import importlib
from typing import Any

from hisguard.checks.database.dialects.base import (
    BackupAges,
    Corruption,
    DbError,
    DbInfo,
    Query,
    ServerFacts,
)

# Config name → module. Aliases are the names people use for the same server.
DIALECTS: dict[str, str] = {
    "mssql": "hisguard.checks.database.dialects.mssql",
    "sqlserver": "hisguard.checks.database.dialects.mssql",
    "postgresql": "hisguard.checks.database.dialects.postgresql",
    "postgres": "hisguard.checks.database.dialects.postgresql",
    "mysql": "hisguard.checks.database.dialects.mysql",
    "mariadb": "hisguard.checks.database.dialects.mysql",
}


def dialect(name: str) -> Any:
    """The dialect object for a config name (KeyError if unknown)."""
    return importlib.import_module(DIALECTS[name]).DIALECT


__all__ = ["DIALECTS", "BackupAges", "Corruption", "DbError", "DbInfo", "Query", "ServerFacts", "dialect"]
