"""hisguard-server: run, init, token create/revoke/rotate, user create, drill start, service."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hisguard import __version__
from hisguard.bilingual import CONFIG_ERROR, fail, say
from hisguard.plan import ROLES, Text
from hisguard.server.data_source import DataSource, DataSourceError, exists, locate, missing, safe_url
from hisguard.server.settings import ServerSettings
from hisguard.tomlconfig import ConfigError

if TYPE_CHECKING:
    from hisguard.server.storage.db import Database


TLS_PAIR = Text(
    "TLS 需要证书及其私钥（--tls-cert 与 --tls-key）",
    "TLS needs both a certificate and its key (--tls-cert and --tls-key)",
)
SERVING = Text("hisguard 服务器已启动：{url}（接口文档 /docs）", "hisguard server on {url}  (API docs: /docs)")
AGENT_OR_PERSON = Text(
    "请给出 --agent 名称 --site 医院，或 --engineer 姓名 [--role 角色]",
    "give either --agent NAME --site SITE or --engineer NAME [--role ROLE]",
)
NEEDS_SITE = Text(
    "--role {role} 需要 --site（该联系人所在医院）", "--role {role} needs --site (the contact's hospital)"
)


def _settings(args: argparse.Namespace) -> ServerSettings:
    """Settings from --config (or HISGUARD_CONFIG) and the command line, for `run` and `init`."""
    try:
        source = locate(getattr(args, "db", None), getattr(args, "config", None))
    except ConfigError as exc:
        fail(CONFIG_ERROR, str(exc))
        raise SystemExit(2) from None
    settings = source.settings
    update: dict[str, object] = {}
    if getattr(args, "listen", None):
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            fail(Text("--listen 应为 主机:端口", "--listen: expected HOST:PORT"), repr(args.listen))
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
        fail(TLS_PAIR)
        raise SystemExit(2)
    for path in (tls.tls_cert, tls.tls_key):
        if path and not Path(path).is_file():
            fail(Text("找不到 TLS 文件", "TLS file not found"), str(path))
            raise SystemExit(2)
    return settings


def _existing(args: argparse.Namespace) -> DataSource:
    """The server's database for a command that changes it: found (see data_source.py), never created."""
    try:
        source = locate(args.db, args.config)
        if not exists(source.url):
            fail(missing(source))
            raise SystemExit(2)
    except ConfigError as exc:
        fail(CONFIG_ERROR, str(exc))
        raise SystemExit(2) from None
    except DataSourceError as exc:
        fail(exc.text)
        raise SystemExit(2) from None
    return source


def _database(source: DataSource) -> Database:
    from hisguard.server.storage.db import Database

    db = Database(source.url)
    db.migrate()  # an older schema is brought up to date, as `run` would
    return db


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from hisguard.server.app import create_app

    settings = _settings(args)
    level = getattr(logging, getattr(args, "log_level", None) or "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hisguard.server.domain.workflow import PlanTextError

    try:
        fresh = not exists(settings.db_url)
    except DataSourceError as exc:
        fail(exc.text)
        return 2
    if fresh:  # the first start (the demo): say so, in case it is the wrong folder
        say(Text("新建数据库", "new database"), safe_url(settings.db_url))
    try:
        app = create_app(settings)
    except PlanTextError as exc:
        fail(Text("预案文本错误", "plan text error"), str(exc))
        return 2
    tls = settings.security
    scheme = "https" if tls.tls_cert else "http"
    say(SERVING, url=f"{scheme}://{settings.host}:{settings.port}/")
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


def cmd_init(args: argparse.Namespace) -> int:
    """Create the database (or bring it up to date) where the server will find it."""
    settings = _settings(args)
    try:
        fresh = not exists(settings.db_url)
    except DataSourceError as exc:
        fail(exc.text)
        return 2
    source = DataSource(settings, settings.db_url, Text("", ""))
    _database(source).dispose()
    said = Text("已新建数据库", "database created") if fresh else Text("数据库已存在，已是最新", "database up to date")
    say(said, source.shown)
    return 0


# One vocabulary of roles: console users and tokens name the hospital's people differently in older
# releases (viewer / hospital_contact); either name is accepted and becomes the one the domain knows.
ROLE_ALIASES = {"viewer": "hospital_contact", "hospital_contact": "viewer"}


def _role(name: str, known: tuple[str, ...]) -> str:
    return name if name in known else ROLE_ALIASES.get(name, name)


def _role_text(role: str) -> Text:
    return ROLES.get(role, Text(role, role))


def cmd_token_create(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import ROLES as TOKEN_ROLES
    from hisguard.server.domain.tokens import create_agent_token, create_engineer_token

    role = _role(args.role, TOKEN_ROLES)
    hospital = role not in ("engineer", "service_manager", "admin")
    if bool(args.agent) == bool(args.engineer):
        fail(AGENT_OR_PERSON)
        return 2
    if args.engineer and hospital and not args.site:
        fail(NEEDS_SITE, role=args.role)
        return 2
    if args.agent and not args.site:
        fail(Text("--agent 需要 --site", "--agent needs --site"))
        return 2
    db = _database(_existing(args))
    with db.session() as s:
        if args.agent:
            token = create_agent_token(s, args.agent, args.site)
            said = Text(
                "代理 {name}（医院 {site}）的令牌（只显示一次，写入代理的配置）",
                "agent {name} at site {site}: token (shown once, store it in the agent's config)",
            )
            say(said, name=args.agent, site=args.site)
        else:
            token = create_engineer_token(s, args.engineer, role, args.site)
            where = Text(f"（医院 {args.site}）", f" at site {args.site}") if hospital else Text("", "")
            said = Text(
                f"{_role_text(role).zh} {{name}}{where.zh}的令牌（只显示一次）",
                f"{role} {{name}}{where.en}: token (shown once)",
            )
            say(said, name=args.engineer)
    db.dispose()
    print(token)  # the last line: scripts take it from here
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    """A web console login; the password comes from a prompt or the first line of --password-file."""
    import getpass

    from hisguard.report import utcnow
    from hisguard.server.domain.users import ROLES as USER_ROLES
    from hisguard.server.domain.users import UserError, create_user

    role = _role(args.role, USER_ROLES)
    source = _existing(args)  # before the password prompt: a wrong folder is said at once
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").partition("\n")[0].rstrip("\r")
        except OSError as exc:
            fail(Text("无法读取 --password-file", "cannot read --password-file"), str(exc))
            return 2
    else:
        password = getpass.getpass("密码 / password: ")
        if password != getpass.getpass("再输一次 / again: "):
            fail(Text("两次输入的密码不同", "the passwords differ"))
            return 2
    db = _database(source)
    try:
        with db.session() as s:
            create_user(s, args.name, role, password, utcnow(), args.site)
    except UserError as exc:
        fail(Text("无法创建用户", "user create"), str(exc))
        return 2
    finally:
        db.dispose()
    where = Text(f"，医院 {args.site}", f" at site {args.site}") if args.site else Text("", "")
    said = Text(f"已创建用户 {{name}}（{_role_text(role).zh}{where.zh}）", f"user {{name}} ({role}{where.en}) created")
    say(said, name=args.name)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import revoke

    if bool(args.agent) == bool(args.engineer) or (args.agent and not args.site):
        fail(AGENT_OR_PERSON)
        return 2
    db = _database(_existing(args))
    with db.session() as s:
        n = revoke(s, "agent", args.agent, args.site) if args.agent else revoke(s, "engineer", args.engineer)
    db.dispose()
    who = (
        Text(f"代理 {args.agent}（医院 {args.site}）", f"agent {args.agent} at site {args.site}")
        if args.agent
        else Text(args.engineer, args.engineer)
    )
    say(Text(f"{who.zh}：已吊销 {n} 个令牌", f"{who.en}: {n} token(s) revoked"))
    return 0 if n else 1


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from hisguard.server.domain.tokens import rotate_agent_token

    if not (args.agent and args.site):
        fail(Text("请给出 --agent 名称 --site 医院", "give --agent NAME --site SITE"))
        return 2
    db = _database(_existing(args))
    with db.session() as s:
        token, revoked = rotate_agent_token(s, args.agent, args.site)
    db.dispose()
    said = Text(
        "代理 {agent}（医院 {site}）：已吊销 {n} 个旧令牌；新令牌（只显示一次）",
        "agent {agent} at site {site}: {n} old token(s) revoked; new token (shown once)",
    )
    say(said, agent=args.agent, site=args.site, n=revoked)
    print(token)
    return 0


def cmd_drill_start(args: argparse.Namespace) -> int:
    """Start a drill (2.8) in the database; the running server delivers its notifications (marked 演练/DRILL)."""
    from hisguard.server.domain.drills import cli_start

    source = _existing(args)
    return cli_start(source.settings, args.site, args.trigger, args.scope, args.department or [], args.by)


DB_HELP = "database URL (default: from HISGUARD_DB, the settings, HISGUARD_DATA, the installed service, var/server)"
CONFIG_HELP = "server settings (TOML; default HISGUARD_CONFIG)"
PEOPLE_ROLES = ["engineer", "service_manager", "hospital_contact", "viewer", "admin"]  # viewer = hospital_contact


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--config", help=CONFIG_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hisguard-server", description="hisguard central server")
    parser.add_argument("--version", action="version", version=f"hisguard-server {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve the API (migrates the database first)")
    run.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8470)")
    _data_arguments(run)
    run.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve https")
    run.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    run.set_defaults(fn=cmd_run)

    init = sub.add_parser("init", help="create the database (or bring it up to date) where the server finds it")
    _data_arguments(init)
    init.set_defaults(fn=cmd_init)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_cmd", required=True)
    create = token.add_parser("create", help="create a token; it is printed as the last line")
    create.add_argument("--agent", help="agent name")
    create.add_argument("--site", help="the agent's (or hospital contact's) site (hospital)")
    create.add_argument("--engineer", help="a person's name (engineer, service manager, hospital contact, admin)")
    create.add_argument(
        "--role",
        choices=PEOPLE_ROLES,
        default="engineer",
        help="the person's role (default engineer); hospital_contact (viewer) needs --site",
    )
    _data_arguments(create)
    create.set_defaults(fn=cmd_token_create)

    user = sub.add_parser("user", help="web console users").add_subparsers(dest="user_cmd", required=True)
    ucreate = user.add_parser("create", help="create a console login (password prompted or from a file)")
    ucreate.add_argument("--name", required=True, help="login name")
    ucreate.add_argument("--role", required=True, choices=PEOPLE_ROLES, help="viewer and hospital_contact are one role")
    ucreate.add_argument("--site", help="a hospital contact's (viewer's) hospital: they see only their own site")
    ucreate.add_argument("--password-file", help="read the password from this file's first line")
    _data_arguments(ucreate)
    ucreate.set_defaults(fn=cmd_user_create)

    verbs = (("revoke", "revoke an agent's or a person's tokens"), ("rotate", "new agent token, old ones revoked"))
    for verb, what in verbs:
        cmd = token.add_parser(verb, help=what)
        cmd.add_argument("--agent", help="agent name")
        cmd.add_argument("--site", help="the agent's site")
        if verb == "revoke":
            cmd.add_argument("--engineer", help="a person's name (all their tokens)")
        _data_arguments(cmd)
        cmd.set_defaults(fn=cmd_token_revoke if verb == "revoke" else cmd_token_rotate)

    drill = sub.add_parser("drill", help="drills (2.8)").add_subparsers(dest="drill_cmd", required=True)
    dstart = drill.add_parser("start", help="start a drill: a simulated incident through the whole plan")
    dstart.add_argument("--site", required=True, help="the hospital (site) drilled")
    dstart.add_argument("--trigger", required=True, type=int, choices=range(1, 7), help="plan trigger 1-6")
    dstart.add_argument("--scope", choices=["hospital", "department", "host"], default="hospital")
    dstart.add_argument("--department", action="append", help="a department down (scope department; repeatable)")
    dstart.add_argument("--by", default="cli", help="who starts it (for the record)")
    _data_arguments(dstart)
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
