"""Lock chains: who waits for whom, and the head blocker each chain leads back to ("HIS 卡死").

A head blocker is a session others wait for that is not waiting itself (typically an open
transaction left idle, or a long statement); everything queued behind it, directly or through
other waiters, belongs to its chain. Pure: the dialects read the waits, this only follows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hisguard.checks.database.dialects.base import LockWait

UNKNOWN = "?"  # a holder the server does not name
PROBABLE = "~"  # prefix of a holder named by inference


@dataclass
class Chain:
    head: str  # session id ("?" when the server does not say who holds the lock)
    waiters: list[LockWait] = field(default_factory=list)

    def blocked(self, at_least_s: float) -> list[LockWait]:
        """Waiters waiting at least this long (a wait of unknown length counts: the server shows it waiting)."""
        return [w for w in self.waiters if w.wait_s is None or w.wait_s >= at_least_s]

    @property
    def longest_s(self) -> float | None:
        known = [w.wait_s for w in self.waiters if w.wait_s is not None]
        return max(known) if known else None

    @property
    def tables(self) -> list[str]:
        seen = [w.table for w in sorted(self.waiters, key=lambda w: -(w.wait_s or 0)) if w.table]
        return list(dict.fromkeys(seen))


def chains(waits: list[LockWait]) -> list[Chain]:
    """One chain per head blocker, the longest queue first."""
    by_waiter = {w.waiter: w for w in waits}

    def heads(session: str, path: frozenset[str]) -> set[str]:
        w = by_waiter.get(session)
        if w is None or not w.blockers:
            return {session}
        found: set[str] = set()
        for b in w.blockers:
            if b in path:
                continue  # a deadlock cycle: the server breaks it by itself within seconds
            found |= heads(b, path | {b})
        return found or {min(path)}

    out: dict[str, Chain] = {}
    for w in waits:
        for b in w.blockers:
            for head in heads(b, frozenset({w.waiter, b})):
                chain = out.setdefault(head, Chain(head))
                if w not in chain.waiters:
                    chain.waiters.append(w)
    return sorted(out.values(), key=lambda c: (-len(c.waiters), -(c.longest_s or 0), c.head))


def session_id(head: str) -> str:
    """The session id to look up (a probable holder carries a prefix)."""
    return head[len(PROBABLE) :] if head.startswith(PROBABLE) else head
