"""Who may call what: people's roles on their bearer tokens, and a hospital contact's site."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException

from hisguard.server.api.deps import principal
from hisguard.server.domain.tokens import Principal

STAFF = ("engineer", "service_manager", "admin")
PEOPLE = (*STAFF, "hospital_contact")


def person(*roles: str) -> Callable[[Principal], Principal]:
    """A person's token whose role is one of `roles`."""
    allowed = roles or PEOPLE

    def check(who: Principal = Depends(principal)) -> Principal:
        if who.kind == "agent":
            raise HTTPException(403, "agent tokens cannot act on cases")
        if who.role not in allowed:
            raise HTTPException(403, f"this needs the role {' or '.join(allowed)}; your token's role is {who.role}")
        return who

    return check


def sees_site(who: Principal, site: str) -> bool:
    """A hospital contact sees only its own hospital; vendor staff see every site."""
    return who.role != "hospital_contact" or who.site == site
