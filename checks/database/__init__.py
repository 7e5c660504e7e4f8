"""HIS database health (triggers 3 and 4): SQL Server, PostgreSQL, MySQL/MariaDB. See docs/database.md."""

from hisguard.checks.database.config import Config
from hisguard.checks.database.probe import probe

__all__ = ["Config", "probe"]
