"""Console users: argon2 hashes, lockout after repeated failures, sessions, roles mapped onto the plan's."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from hisguard.server.domain import users
from hisguard.server.storage.db import Database

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'u.sqlite3'}")
    d.migrate()
    yield d
    d.dispose()


def test_password_is_stored_as_argon2id_hash_only(db: Database) -> None:
    with db.session() as s:
        u = users.create_user(s, "li", "engineer", "correct horse", T0)
        assert u.password_hash.startswith("$argon2id$")
        assert "correct horse" not in u.password_hash
        assert users.check_password(s, "li", "correct horse", T0).id == u.id


@pytest.mark.parametrize(
    ("role", "site", "password", "message"),
    [
        ("viewer", None, "long enough", "needs --site"),
        ("engineer", "renmin", "long enough", "viewers only"),
        ("janitor", None, "long enough", "role must be"),
        ("engineer", None, "short", "at least"),
    ],
)
def test_bad_users_are_refused_with_the_reason(
    db: Database, role: str, site: str | None, password: str, message: str
) -> None:
    with db.session() as s, pytest.raises(users.UserError, match=message):
        users.create_user(s, "x", role, password, T0, site)


def test_duplicate_name_is_refused(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "li", "engineer", "password-1", T0)
        with pytest.raises(users.UserError, match="exists"):
            users.create_user(s, "li", "admin", "password-2", T0)


def test_lockout_after_repeated_failures_then_unlock(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "li", "engineer", "password-1", T0)
    for i in range(users.MAX_FAILURES - 1):
        with db.session() as s, pytest.raises(users.LoginFailed) as exc:
            users.check_password(s, "li", f"wrong-{i}", T0)
        assert exc.value.locked_until is None
    with db.session() as s, pytest.raises(users.LoginFailed) as exc:
        users.check_password(s, "li", "wrong-last", T0)
    assert exc.value.locked_until == T0 + users.LOCKOUT
    # Locked: even the right password is refused until the lock ends.
    with db.session() as s, pytest.raises(users.LoginFailed, match="locked"):
        users.check_password(s, "li", "password-1", T0 + timedelta(minutes=1))
    with db.session() as s:
        assert users.check_password(s, "li", "password-1", T0 + users.LOCKOUT + timedelta(seconds=1))
        u = s.scalar(select(users.User).where(users.User.name == "li"))
        assert u.failed_logins == 0 and u.locked_until is None


def test_unknown_name_fails_like_a_wrong_password(db: Database) -> None:
    with db.session() as s, pytest.raises(users.LoginFailed, match="wrong name or password"):
        users.check_password(s, "nobody", "whatever-pass", T0)


def test_sessions_expire_and_end(db: Database) -> None:
    with db.session() as s:
        u = users.create_user(s, "wang", "viewer", "password-1", T0, site="renmin")
        token = users.start_session(s, u, T0)
    with db.session() as s:
        who = users.session_login(s, token, T0 + timedelta(hours=1))
        assert who is not None and who.name == "wang" and who.site == "renmin" and len(who.csrf) >= 32
        assert users.session_login(s, token + "x", T0) is None
        assert users.session_login(s, token, T0 + users.SESSION_TTL + timedelta(seconds=1)) is None
        # Only a hash of the cookie is stored.
        assert s.scalar(select(users.WebSession.id_hash)) != token
        users.end_session(s, token)
    with db.session() as s:
        assert users.session_login(s, token, T0) is None


def test_roles_map_onto_the_plan_engines_roles() -> None:
    viewer = users.principal_of("wang", "viewer", "renmin")
    assert (viewer.kind, viewer.role, viewer.site) == ("hospital", "hospital_contact", "renmin")
    for role in ("engineer", "service_manager", "admin"):
        p = users.principal_of("li", role, None)
        assert (p.kind, p.role, p.site) == ("engineer", role, None)


def test_language_is_remembered_and_checked(db: Database) -> None:
    with db.session() as s:
        u = users.create_user(s, "li", "engineer", "password-1", T0)
        token = users.start_session(s, u, T0)
        users.set_lang(s, u.id, "en")
        with pytest.raises(users.UserError):
            users.set_lang(s, u.id, "fr")
    with db.session() as s:
        assert users.session_login(s, token, T0).lang == "en"


def test_cli_user_create_from_password_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-password\nignored second line\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "hisguard.server.cli", "init", "--db", url], check=True, timeout=60)
    base = [sys.executable, "-m", "hisguard.server.cli", "user", "create", "--db", url, "--password-file", str(pw)]
    ok = subprocess.run(
        [*base, "--name", "wang", "--role", "viewer", "--site", "renmin"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*base, "--name", "zhao", "--role", "viewer"], capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --site" in bad.stderr
    db = Database(url)
    with db.session() as s:
        u = users.check_password(s, "wang", "s3cret-password", T0)
        assert (u.role, u.site) == ("viewer", "renmin")
    db.dispose()
