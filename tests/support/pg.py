"""A throwaway PostgreSQL database per test on the machine's server (127.0.0.1:5432)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.peers import need

ADMIN = "host=127.0.0.1 port=5432 dbname=postgres user=root connect_timeout=3"


def admin() -> object:
    try:
        import psycopg

        return psycopg.connect(ADMIN, autocommit=True)
    except Exception as exc:  # no server, no driver
        need(False, f"needs PostgreSQL on 127.0.0.1:5432 ({exc})")
        raise


@contextmanager
def database(prefix: str = "hisguard") -> Iterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy URL, drop it (even if still in use)."""
    conn = admin()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]
