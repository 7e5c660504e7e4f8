"""Private PostgreSQL and MariaDB servers for tests that restart a server, fill its connections or change
its settings (autovacuum, statistics, plugins). The machine's shared servers (5432, 3306) are never touched.

Each server lives in its own temporary directory on a free loopback port, owned by the service account
(`initdb` refuses root; `mariadbd --user=mysql` drops to it), and is stopped and removed by `stop()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.peers import need
from tests.support.procs import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)


def _wait(ok: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come up within {timeout:g}s ({last})")


class PrivatePostgres:
    """`initdb` + `pg_ctl` as user postgres, trust authentication, on 127.0.0.1:PORT."""

    def __init__(self, **settings: str) -> None:
        need(os.geteuid() == 0, "private PostgreSQL needs root (initdb runs as user postgres)")
        need((PG_BIN / "initdb").exists(), f"PostgreSQL server binaries in {PG_BIN} (Debian postgresql-15)")
        self.dir = Path(tempfile.mkdtemp(prefix="hg-pg-"))
        _chown(self.dir, "postgres")
        self.port = free_port()
        self.settings = {"autovacuum": "on", "max_connections": "20", **settings}
        self._run([str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8"])

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, user="postgres", group="postgres", capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"{cmd[0]} failed: {out.stderr[-2000:]}")

    def _options(self) -> str:
        extra = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {extra}"

    def start(self) -> PrivatePostgres:
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", self._options(), "-l", str(self.dir / "log"),
             "-w", "-t", "60", "start"]
        )  # fmt: skip
        return self

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])

    def restart(self, **settings: str) -> None:
        self.settings.update(settings)
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, dbname: str = "postgres", user: str = "postgres", **kw: Any) -> Any:
        import psycopg

        kw.setdefault("autocommit", True)
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname=dbname, **kw)


class PrivateMariaDB:
    """`mariadb-install-db` + `mariadbd --datadir` on 127.0.0.1:PORT; root with an empty password over TCP."""

    def __init__(self, *options: str) -> None:
        need(os.geteuid() == 0, "private MariaDB needs root (mariadbd --user=mysql)")
        need(
            shutil.which("mariadbd") is not None or Path("/usr/sbin/mariadbd").exists(),
            "mariadbd (Debian mariadb-server)",
        )
        need(shutil.which("mariadb-install-db") is not None, "mariadb-install-db (Debian mariadb-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="hg-my-"))
        _chown(self.dir, "mysql")
        self.port = free_port()
        self.options = ["--max-connections=20", "--skip-name-resolve", *options]
        self.proc: subprocess.Popen[bytes] | None = None
        out = subprocess.run(
            ["mariadb-install-db", "--user=mysql", f"--datadir={self.dir / 'data'}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            raise AssertionError(f"mariadb-install-db failed: {out.stderr[-2000:]}")

    def start(self) -> PrivateMariaDB:
        binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        cmd = [
            binary, "--no-defaults", "--user=mysql", f"--datadir={self.dir / 'data'}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.dir / 'sock'}", f"--pid-file={self.dir / 'pid'}",
            f"--log-error={self.dir / 'err'}", *self.options,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                err = (self.dir / "err").read_text(errors="replace")[-2000:]
                raise AssertionError(f"mariadbd exited: {err}")
            self.connect().close()
            return True

        _wait(up, 60, "private MariaDB")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, *options: str) -> None:
        self.options += list(options)
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, user: str = "root", password: str = "", database: str | None = None, **kw: Any) -> Any:
        import pymysql

        kw.setdefault("autocommit", True)
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user=user, password=password.encode("utf-8"), database=database,
            charset="utf8mb4", connect_timeout=5, **kw,
        )  # fmt: skip
