"""A user's anomaly query must only read: one SELECT, nothing that writes, locks or runs procedures.

Checked with sqlglot in the server's own dialect when the configuration is loaded; the session
the query later runs in is read-only as well (PostgreSQL, MySQL), so this is the first of two walls.
"""

from __future__ import annotations


class NotReadOnly(ValueError):
    pass


def check_read_only(sql: str, dialect: str) -> None:
    """Raise NotReadOnly (with the reason) unless `sql` is a single read-only SELECT in `dialect`."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        raise NotReadOnly(f"not valid SQL for {dialect}: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise NotReadOnly(f"must be exactly one statement, found {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise NotReadOnly(f"must be a SELECT, found {tree.key.upper()}")
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command)
    for node in tree.walk():
        if isinstance(node, writes):
            raise NotReadOnly(f"writes or changes the database ({node.key.upper()})")
        if isinstance(node, exp.Into):
            raise NotReadOnly("SELECT … INTO creates a table")
        if isinstance(node, exp.Lock):
            raise NotReadOnly("FOR UPDATE / FOR SHARE takes row locks")
