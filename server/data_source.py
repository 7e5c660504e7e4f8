"""Where the server's data is, for the commands that change it (`token create`, `user create`, `drill start`).

In order: `--db URL`; the environment variable HISGUARD_DB; the settings file (`--config`, or
HISGUARD_CONFIG) and its `database_url` or `data_dir`; HISGUARD_DATA; the installed systemd unit's
settings and data directory; the default data directory (var/server under the current directory).

Only `run` (first start) and `init` create a database. Every other command refuses a database
that does not exist yet: a command run from the wrong folder must not report success into a new,
empty database the server never reads.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hisguard.plan import Text
from hisguard.server.settings import ServerSettings, load_settings

DB_ENV = "HISGUARD_DB"
CONFIG_ENV = "HISGUARD_CONFIG"
DATA_ENV = "HISGUARD_DATA"
UNIT = Path("/etc/systemd/system/hisguard-server.service")


class DataSourceError(Exception):
    """The database cannot be used as asked; the message says where it looked and what to do."""

    def __init__(self, text: Text) -> None:
        super().__init__(text.en)
        self.text = text


@dataclass(frozen=True)
class DataSource:
    settings: ServerSettings  # database_url set to the database found
    url: str
    found_by: Text  # how: "--db", "HISGUARD_DB", "the settings file …", …

    @property
    def shown(self) -> str:
        """The URL without its password, for messages."""
        return safe_url(self.url)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def installed_unit(unit: Path = UNIT) -> tuple[Path | None, Path | None]:
    """The settings file (--config) and data directory (HISGUARD_DATA) of an installed server unit."""
    try:
        text = unit.read_text(encoding="utf-8")
    except OSError:
        return None, None
    config = data = None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            args = shlex.split(value)
            if "--config" in args[:-1]:
                config = Path(args[args.index("--config") + 1])
        elif key == "Environment":
            name, _, path = shlex.split(value)[0].partition("=") if value.strip() else ("", "", "")
            if name == DATA_ENV and path:
                data = Path(path)
    return config, data


def locate(db: str | None, config: str | None, environ: dict[str, str] | None = None, unit: Path = UNIT) -> DataSource:
    """The database the server uses, and how it was found (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    config_path = Path(config) if config else Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None
    unit_data = None
    if config_path is None and not db and not env.get(DB_ENV) and not env.get(DATA_ENV):
        config_path, unit_data = installed_unit(unit)
        if config_path is not None and not config_path.is_file():
            config_path = None
    settings = load_settings(config_path)
    chosen = settings.model_fields_set
    if db:
        url, how = db, Text("命令行 --db", "--db on the command line")
    elif env.get(DB_ENV):
        url, how = env[DB_ENV], Text(f"环境变量 {DB_ENV}", f"the environment variable {DB_ENV}")
    elif config_path is not None and ("database_url" in chosen or "data_dir" in chosen):
        key = "database_url" if "database_url" in chosen else "data_dir"
        url, how = (
            settings.db_url,
            Text(f"设置文件 {config_path} 的 {key}", f"{key} in the settings file {config_path}"),
        )
    elif env.get(DATA_ENV):
        settings = settings.model_copy(update={"data_dir": Path(env[DATA_ENV]).resolve()})
        url, how = settings.db_url, Text(f"环境变量 {DATA_ENV}", f"the environment variable {DATA_ENV}")
    elif unit_data is not None:
        settings = settings.model_copy(update={"data_dir": unit_data})
        url, how = settings.db_url, Text(f"已安装的服务 {unit}", f"the installed service {unit}")
    else:
        url = settings.db_url
        how = Text("默认数据目录（当前目录下的 var/server）", "the default data directory (var/server in this folder)")
    return DataSource(settings.model_copy(update={"database_url": url}), url, how)


def exists(url: str) -> bool:
    """Whether hisguard's schema is there (a migrated database), without creating anything."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DataSourceError(Text(f"数据库地址无效：{exc}", f"not a database URL: {exc}")) from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not Path(path).is_file():
            return False
        try:  # read-only: never creates or changes the file
            with closing(sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)) as conn:
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
        except sqlite3.Error as exc:
            raise DataSourceError(Text(f"无法读取 {path}：{exc}", f"cannot read {path}: {exc}")) from None
        return found is not None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")
    except SQLAlchemyError as exc:
        said = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        raise DataSourceError(
            Text(f"无法连接数据库 {safe_url(url)}：{said}", f"cannot connect to the database {safe_url(url)}: {said}")
        ) from None
    finally:
        engine.dispose()


def missing(source: DataSource) -> Text:
    """What to say when the database is not there."""
    return Text(
        f"没有找到 hisguard 数据库：{source.shown}（依据：{source.found_by.zh}）。\n"
        f"请指明服务器的数据：--db URL、环境变量 {DB_ENV}、--config 设置文件中的 database_url 或 data_dir、"
        f"或环境变量 {DATA_ENV}；新建数据库请用 hisguard-server init。",
        f"no hisguard database at {source.shown} (from {source.found_by.en}).\n"
        f"Say where the server's data is: --db URL, {DB_ENV}, database_url or data_dir in the --config settings "
        f"file, or {DATA_ENV}; to create a new database: hisguard-server init.",
    )
