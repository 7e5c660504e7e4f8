"""Request dependencies: the database session and who is calling."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from hisguard.server.domain.tokens import Principal, authenticate
from hisguard.server.storage.db import Database

_bearer = HTTPBearer(auto_error=False, description="Agent or engineer token")


def database(request: Request) -> Database:
    return request.app.state.db


def session(db: Database = Depends(database)) -> Iterator[Session]:
    with db.session() as s:
        yield s


def principal(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer), db: Database = Depends(database)
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    with db.session() as s:
        who = authenticate(s, creds.credentials)
    if who is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return who


def require(kind: str) -> Callable[[Principal], Principal]:
    def check(who: Principal = Depends(principal)) -> Principal:
        if who.kind != kind:
            raise HTTPException(403, f"this endpoint needs an {kind} token")
        return who

    return check
