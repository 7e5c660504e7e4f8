"""People who log in to the web console: argon2-hashed passwords, lockout, browser sessions, roles.

Console roles map onto the plan engine's roles (the ones on plan steps and API tokens): a viewer is
a hospital's IT staff, bound to its site, and acts as that hospital's contact (hospital_contact).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import ForeignKey, Index, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hisguard.server.domain.tokens import Principal
from hisguard.server.storage.models import Base

ROLES = ("viewer", "engineer", "service_manager", "admin")
PLAN_ROLE = {
    "viewer": "hospital_contact",
    "engineer": "engineer",
    "service_manager": "service_manager",
    "admin": "admin",
}
LANGS = ("zh", "en")
MAX_FAILURES = 5  # wrong passwords in a row before the account locks
LOCKOUT = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=12)
MIN_PASSWORD = 8

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = _hasher.hash(secrets.token_hex(16))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(30))  # viewer | engineer | service_manager | admin
    site: Mapped[str | None] = mapped_column(String(200))  # a viewer's hospital
    password_hash: Mapped[str] = mapped_column(String(200))
    lang: Mapped[str] = mapped_column(String(5), default="zh")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class WebSession(Base):
    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # the cookie is never stored
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_web_sessions_user", "user_id"),)


class UserError(ValueError):
    """A user that cannot be created as asked (role, site, password)."""


class LoginFailed(Exception):
    """Wrong name or password, or a locked account (the message says which only for the lock)."""

    def __init__(self, message: str, locked_until: datetime | None = None) -> None:
        super().__init__(message)
        self.locked_until = locked_until


@dataclass(frozen=True)
class Login:
    """Who a browser session belongs to."""

    user_id: int
    name: str
    role: str  # console role
    site: str | None
    lang: str
    csrf: str

    @property
    def principal(self) -> Principal:
        return principal_of(self.name, self.role, self.site)


def principal_of(name: str, role: str, site: str | None) -> Principal:
    """The plan engine's view of a console user (same as a bearer token of that role)."""
    plan_role = PLAN_ROLE[role]
    kind = "hospital" if plan_role == "hospital_contact" else "engineer"
    return Principal(kind, name, site if role == "viewer" else None, None, 0, plan_role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(s: Session, name: str, role: str, password: str, at: datetime, site: str | None = None) -> User:
    name = name.strip()
    if not name or len(name) > 200:
        raise UserError("name must be 1-200 characters")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "viewer" and not site:
        raise UserError("a viewer (hospital IT) needs --site: it sees only its own hospital")
    if role != "viewer" and site:
        raise UserError(f"--site is for viewers only; a {role} sees every site")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must have at least {MIN_PASSWORD} characters")
    if s.scalar(select(User.id).where(User.name == name)) is not None:
        raise UserError(f"user {name!r} exists already")
    user = User(
        name=name,
        role=role,
        site=site,
        password_hash=_hasher.hash(password),
        lang="zh",
        failed_logins=0,
        created_at=at,
    )
    s.add(user)
    s.flush()
    return user


def check_password(s: Session, name: str, password: str, at: datetime) -> User:
    """The user if the password is right; counts failures and locks the account after MAX_FAILURES."""
    user = s.scalar(select(User).where(User.name == name.strip()))
    if user is None or user.disabled_at is not None:
        try:
            _hasher.verify(_DUMMY, password)
        except VerificationError:
            pass
        raise LoginFailed("wrong name or password")
    if user.locked_until is not None and user.locked_until > at:
        raise LoginFailed("account locked after repeated failures", user.locked_until)
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until, user.failed_logins = at + LOCKOUT, 0
            raise LoginFailed("account locked after repeated failures", user.locked_until) from None
        raise LoginFailed("wrong name or password") from None
    user.failed_logins, user.locked_until = 0, None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def start_session(s: Session, user: User, at: datetime) -> str:
    """A new session; returns the cookie value (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    s.execute(delete(WebSession).where(WebSession.expires_at < at))
    s.add(
        WebSession(
            id_hash=_digest(token),
            user_id=user.id,
            csrf=secrets.token_urlsafe(32),
            created_at=at,
            expires_at=at + SESSION_TTL,
        )
    )
    return token


def session_login(s: Session, token: str, at: datetime) -> Login | None:
    if not token:
        return None
    row = s.execute(
        select(WebSession, User).join(User, User.id == WebSession.user_id).where(WebSession.id_hash == _digest(token))
    ).first()
    if row is None:
        return None
    sess, user = row
    if sess.expires_at <= at or user.disabled_at is not None:
        return None
    return Login(user.id, user.name, user.role, user.site, user.lang, sess.csrf)


def end_session(s: Session, token: str) -> None:
    s.execute(delete(WebSession).where(WebSession.id_hash == _digest(token)))


def set_lang(s: Session, user_id: int, lang: str) -> None:
    if lang not in LANGS:
        raise UserError(f"language must be one of {', '.join(LANGS)}")
    user = s.get(User, user_id)
    if user is not None:
        user.lang = lang


def same_token(a: str, b: str) -> bool:
    return bool(a) and bool(b) and secrets.compare_digest(a.encode(), b.encode())
