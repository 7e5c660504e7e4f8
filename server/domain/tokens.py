"""Bearer tokens for agents and engineers: random, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from hisguard.report import utcnow
from hisguard.server.storage.models import Agent, Token

PREFIX = {"agent": "hga_", "engineer": "hge_", "hospital": "hgh_"}
# People's roles. Vendor staff act as kind "engineer" (the engineers' API); a hospital contact is
# kind "hospital", bound to one site, and sees only that site's cases.
ROLES = ("engineer", "service_manager", "hospital_contact", "admin")


def digest(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough (no dictionary to slow down).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    kind: str  # agent | engineer | hospital
    name: str
    site: str | None
    agent_id: int | None
    token_id: int
    role: str = "engineer"  # agent | engineer | service_manager | hospital_contact | admin


def create_agent_token(s: Session, agent: str, site: str) -> str:
    row = s.scalar(select(Agent).where(Agent.site == site, Agent.name == agent))
    if row is None:
        row = Agent(name=agent, site=site, created_at=utcnow(), hospital_critical=False)
        s.add(row)
        s.flush()
    token = PREFIX["agent"] + secrets.token_urlsafe(32)
    s.add(Token(kind="agent", name=agent, site=site, agent_id=row.id, token_hash=digest(token), created_at=utcnow()))
    return token


def create_engineer_token(s: Session, name: str, role: str = "engineer", site: str | None = None) -> str:
    """A person's token with a role; a hospital contact's is bound to its site."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "hospital_contact" and not site:
        raise ValueError("a hospital_contact token needs the contact's site")
    kind = "hospital" if role == "hospital_contact" else "engineer"
    token = PREFIX[kind] + secrets.token_urlsafe(32)
    s.add(
        Token(
            kind=kind,
            name=name,
            site=site if role == "hospital_contact" else None,
            role=role,
            token_hash=digest(token),
            created_at=utcnow(),
        )
    )
    return token


_LOOKUP = select(Token.kind, Token.name, Token.site, Token.agent_id, Token.id, Token.role, Token.token_hash).where(
    Token.token_hash.in_(bindparam("hashes", expanding=True)), Token.revoked_at.is_(None)
)


def authenticate(s: Session, token: str) -> Principal | None:
    return authenticate_all(s, [token]).get(token)


def authenticate_all(s: Session, tokens: Iterable[str]) -> dict[str, Principal]:
    """The live tokens among these, each with who it is (one query: ingest checks a whole group at once)."""
    # Columns, not the entity: this runs on every request.
    hashes = {digest(t): t for t in tokens}
    out = {}
    for kind, name, site, agent_id, token_id, role, token_hash in s.execute(_LOOKUP, {"hashes": list(hashes)}):
        role = "agent" if kind == "agent" else (role or "engineer")
        out[hashes[token_hash]] = Principal(kind, name, site, agent_id, token_id, role)
    return out


def revoke(s: Session, kind: str, name: str, site: str | None = None) -> int:
    """Revoke every live token of an agent (kind "agent", with its site) or a person; return how many."""
    query = select(Token).where(Token.name == name, Token.revoked_at.is_(None))
    if kind == "agent":
        query = query.where(Token.kind == "agent", Token.site == site)
    else:
        query = query.where(Token.kind.in_(("engineer", "hospital")))
    rows = list(s.scalars(query))
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)


def rotate_agent_token(s: Session, agent: str, site: str) -> tuple[str, int]:
    """A new token for the agent; its old tokens stop working at once. Returns the token and how many were revoked."""
    revoked = revoke(s, "agent", agent, site)
    return create_agent_token(s, agent, site), revoked
