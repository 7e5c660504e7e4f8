"""Real server and agent processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    """Signal a process and wait for it; kill it if it has not gone after 15 s."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class ServerProc:
    """`hisguard-server run` in its own process, on a free loopback port, with its own data directory."""

    def __init__(self, data_dir: Path, db_url: str | None = None, extra_config: str = "") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = data_dir / "server.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"[server]\nwatchdog_interval = 0.5\n{extra_config}")
        self.log = data_dir / "server.log"
        self.cli("init")  # the other commands never create a database
        self.engineer_token = self.cli("token", "create", "--engineer", "tester")

    def env(self) -> dict[str, str]:
        return {**os.environ, "HISGUARD_DATA": str(self.data_dir)}

    def cli(self, *args: str) -> str:
        db = ["--db", self.db_url] if self.db_url else []
        out = subprocess.run(
            [sys.executable, "-m", "hisguard.server.cli", *args, *db, "--config", str(self.config)],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip().splitlines()[-1]

    def agent_token(self, agent: str, site: str) -> str:
        return self.cli("token", "create", "--agent", agent, "--site", site)

    def start(self) -> ServerProc:
        db = ["--db", self.db_url] if self.db_url else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hisguard.server.cli",
                "run",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--config",
                str(self.config),
                *db,
            ],
            env=self.env(),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._healthy, 30, what="server /healthz")
        return self

    def _healthy(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.proc, sig)
        self.proc = None

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(
            f"{self.url}/api/v1{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.engineer_token}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def incidents(self, **params: Any) -> list[dict[str, Any]]:
        return self.get("/incidents", limit=1000, **params)


class AgentProc:
    """`hisguard-agent run -c FILE` in its own process (optionally inside a network namespace)."""

    def __init__(self, workdir: Path, config_text: str, netns: str | None = None, python: str = sys.executable) -> None:
        self.python = python
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "agent.toml"
        self.config.write_text(config_text, encoding="utf-8")
        self.log = workdir / "agent.log"
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        cmd = [self.python, "-m", "hisguard.agent.cli", "run", "-c", str(self.config)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=self.workdir)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.proc, sig)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
