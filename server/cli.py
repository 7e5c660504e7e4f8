"""hisguard-server: run, token create, user create."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hisguard import __version__
from hisguard.server.settings import ServerSettings, load_settings
from hisguard.tomlconfig import ConfigError


def _settings(args: argparse.Namespace) -> ServerSettings:
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"配置错误 / configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    update: dict[str, object] = {}
    if getattr(args, "db", None):
        update["database_url"] = args.db
    if getattr(args, "listen", None):
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            print(f"--listen: expected HOST:PORT, got {args.listen!r}", file=sys.stderr)
            raise SystemExit(2)
        update.update(host=host.strip("[]"), port=int(port))
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert or key:
        update["security"] = settings.security.model_copy(
            update={"tls_cert": cert or settings.security.tls_cert, "tls_key": key or settings.security.tls_key}
        )
    settings = settings.model_copy(update=update)
    tls = settings.security
    if bool(tls.tls_cert) != bool(tls.tls_key):
        print("TLS needs both a certificate and its key (--tls-cert and --tls-key)", file=sys.stderr)
        raise SystemExit(2)
    for path in (tls.tls_cert, tls.tls_key):
        if path and not Path(path).is_file():
            print(f"TLS file not found: {path}", file=sys.stderr)
            raise SystemExit(2)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from hisguard.server.app import create_app

    settings = _settings(args)
    level = getattr(logging, getattr(args, "log_level", None) or "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hisguard.server.domain.workflow import PlanTextError

    try:
        app = create_app(settings)
    except PlanTextError as exc:
        print(f"预案文本错误 / plan text error:\n{exc}", file=sys.stderr)
        return 2
    tls = settings.security
    scheme = "https" if tls.tls_cert else "http"
    print(f"hisguard server on {scheme}://{settings.host}:{settings.port}/  (API docs: /docs)", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="debug" if level == logging.DEBUG else "warning",
        access_log=False,  # request lines could carry tokens in query strings: never logged
        ssl_certfile=str(tls.tls_cert) if tls.tls_cert else None,
        ssl_keyfile=str(tls.tls_key) if tls.tls_key else None,
    )
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import create_agent_token, create_engineer_token
    from hisguard.server.storage.db import Database

    if bool(args.agent) == bool(args.engineer):
        print("give either --agent NAME --site SITE or --engineer NAME [--role ROLE]", file=sys.stderr)
        return 2
    if args.engineer and args.role == "hospital_contact" and not args.site:
        print("--role hospital_contact needs --site (the contact's hospital)", file=sys.stderr)
        return 2
    if args.agent and not args.site:
        print("--agent needs --site", file=sys.stderr)
        return 2
    settings = _settings(args)
    db = Database(settings.db_url)
    db.migrate()
    with db.session() as s:
        if args.agent:
            token = create_agent_token(s, args.agent, args.site)
            print(f"agent {args.agent} at site {args.site}: token (shown once, store it in the agent's config):")
        else:
            token = create_engineer_token(s, args.engineer, args.role, args.site)
            where = f" at site {args.site}" if args.role == "hospital_contact" else ""
            print(f"{args.role} {args.engineer}{where}: token (shown once):")
    db.dispose()
    print(token)
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    """A web console login; the password comes from a prompt or the first line of --password-file."""
    import getpass

    from hisguard.report import utcnow
    from hisguard.server.domain.users import UserError, create_user
    from hisguard.server.storage.db import Database

    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").partition("\n")[0].rstrip("\r")
        except OSError as exc:
            print(f"--password-file: {exc}", file=sys.stderr)
            return 2
    else:
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("the passwords differ", file=sys.stderr)
            return 2
    settings = _settings(args)
    db = Database(settings.db_url)
    db.migrate()
    try:
        with db.session() as s:
            create_user(s, args.name, args.role, password, utcnow(), args.site)
    except UserError as exc:
        print(f"user create: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    where = f" at site {args.site}" if args.site else ""
    print(f"user {args.name} ({args.role}{where}) created")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import revoke
    from hisguard.server.storage.db import Database

    if bool(args.agent) == bool(args.engineer) or (args.agent and not args.site):
        print("give either --agent NAME --site SITE or --engineer NAME", file=sys.stderr)
        return 2
    db = Database(_settings(args).db_url)
    db.migrate()
    with db.session() as s:
        n = revoke(s, "agent", args.agent, args.site) if args.agent else revoke(s, "engineer", args.engineer)
    db.dispose()
    who = f"agent {args.agent} at site {args.site}" if args.agent else args.engineer
    print(f"{who}: {n} token(s) revoked")
    return 0 if n else 1


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import rotate_agent_token
    from hisguard.server.storage.db import Database

    if not (args.agent and args.site):
        print("give --agent NAME --site SITE", file=sys.stderr)
        return 2
    db = Database(_settings(args).db_url)
    db.migrate()
    with db.session() as s:
        token, revoked = rotate_agent_token(s, args.agent, args.site)
    db.dispose()
    print(f"agent {args.agent} at site {args.site}: {revoked} old token(s) revoked; new token (shown once):")
    print(token)
    return 0


def cmd_drill_start(args: argparse.Namespace) -> int:
    """Start a drill (2.8) in the database; the running server delivers its notifications (marked 演练/DRILL)."""
    from hisguard.server.domain.drills import cli_start

    return cli_start(_settings(args), args.site, args.trigger, args.scope, args.department or [], args.by)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hisguard-server", description="hisguard central server")
    parser.add_argument("--version", action="version", version=f"hisguard-server {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve the API (migrates the database first)")
    run.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8470)")
    run.add_argument("--db", help="database URL (default: SQLite in the data directory)")
    run.add_argument("--config", help="server settings (TOML)")
    run.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve https")
    run.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    run.set_defaults(fn=cmd_run)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_cmd", required=True)
    create = token.add_parser("create", help="create a token; it is printed as the last line")
    create.add_argument("--agent", help="agent name")
    create.add_argument("--site", help="the agent's (or hospital contact's) site (hospital)")
    create.add_argument("--engineer", help="a person's name (engineer, service manager, hospital contact, admin)")
    create.add_argument(
        "--role",
        choices=["engineer", "service_manager", "hospital_contact", "admin"],
        default="engineer",
        help="the person's role (default engineer); hospital_contact needs --site",
    )
    create.add_argument("--db", help="database URL")
    create.add_argument("--config", help="server settings (TOML)")
    create.set_defaults(fn=cmd_token_create)

    user = sub.add_parser("user", help="web console users").add_subparsers(dest="user_cmd", required=True)
    ucreate = user.add_parser("create", help="create a console login (password prompted or from a file)")
    ucreate.add_argument("--name", required=True, help="login name")
    ucreate.add_argument("--role", required=True, choices=["viewer", "engineer", "service_manager", "admin"])
    ucreate.add_argument("--site", help="a viewer's hospital (viewers see only their own site)")
    ucreate.add_argument("--password-file", help="read the password from this file's first line")
    ucreate.add_argument("--db", help="database URL")
    ucreate.add_argument("--config", help="server settings (TOML)")
    ucreate.set_defaults(fn=cmd_user_create)

    verbs = (("revoke", "revoke an agent's or a person's tokens"), ("rotate", "new agent token, old ones revoked"))
    for verb, what in verbs:
        cmd = token.add_parser(verb, help=what)
        cmd.add_argument("--agent", help="agent name")
        cmd.add_argument("--site", help="the agent's site")
        if verb == "revoke":
            cmd.add_argument("--engineer", help="a person's name (all their tokens)")
        cmd.add_argument("--db", help="database URL")
        cmd.add_argument("--config", help="server settings (TOML)")
        cmd.set_defaults(fn=cmd_token_revoke if verb == "revoke" else cmd_token_rotate)

    drill = sub.add_parser("drill", help="drills (2.8)").add_subparsers(dest="drill_cmd", required=True)
    dstart = drill.add_parser("start", help="start a drill: a simulated incident through the whole plan")
    dstart.add_argument("--site", required=True, help="the hospital (site) drilled")
    dstart.add_argument("--trigger", required=True, type=int, choices=range(1, 7), help="plan trigger 1-6")
    dstart.add_argument("--scope", choices=["hospital", "department", "host"], default="hospital")
    dstart.add_argument("--department", action="append", help="a department down (scope department; repeatable)")
    dstart.add_argument("--by", default="cli", help="who starts it (for the record)")
    dstart.add_argument("--db", help="database URL")
    dstart.add_argument("--config", help="server settings (TOML)")
    dstart.set_defaults(fn=cmd_drill_start)

    from hisguard.server.service import add_arguments as service_arguments
    from hisguard.server.service import cmd_service

    service = sub.add_parser("service", help="install, remove or query the systemd unit (Linux)")
    service_arguments(service)
    service.set_defaults(fn=cmd_service)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
