"""The agent keeps its resident memory small: malloc arenas capped at start, freed pages returned
after start-up and after every heartbeat — and on a libc without these calls, it runs all the same."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hisguard.agent import cli, memory, runtime
from hisguard.agent.config import load_config

GLIBC = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))


def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nname = "mem"\nstate_dir = "s"\nheartbeat_interval = 1\n'
        '[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        "[[probe.host]]\ninterval = 1\ntimeout = 1\n"
    )
    return path


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_on_glibc_arenas_are_capped_and_the_heap_trimmed() -> None:
    assert memory.limit_arenas() is True
    assert memory.release() is True
    try:
        assert memory.settle() is True
    finally:
        gc.unfreeze()


def test_without_glibc_the_calls_do_nothing_and_never_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_libc", None)
    assert (memory.limit_arenas(), memory.release(), memory.settle()) == (False, False, False)

    class Broken:  # a libc that has the names but fails when called
        def mallopt(self, *_: int) -> int:
            raise OSError("no mallopt here")

        def malloc_trim(self, *_: int) -> int:
            raise OSError("no malloc_trim here")

    monkeypatch.setattr(memory, "_libc", Broken())
    assert (memory.limit_arenas(), memory.release()) == (False, False)


async def test_agent_settles_after_start_up_and_releases_after_each_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    agent = runtime.Agent(load_config(config(tmp_path)))
    monkeypatch.setattr(runtime, "settle", lambda: calls.append(("settle", agent.status["host"].runs)) or False)
    monkeypatch.setattr(runtime, "release", lambda: calls.append(("release", 0)) or False)
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(3.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    kinds = [k for k, _ in calls]
    assert kinds[0] == "settle" and kinds.count("settle") == 1
    assert calls[0][1] >= 1  # after the first round had run
    assert kinds.count("release") >= 2  # once per heartbeat interval (1 s)


def test_run_caps_the_arenas_before_the_agent_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(memory, "limit_arenas", lambda: order.append("limit_arenas") or False)

    async def run(self: runtime.Agent) -> None:
        order.append("run")
        self.store.close()

    monkeypatch.setattr(runtime.Agent, "run", run)
    assert cli.main(["run", "-c", str(config(tmp_path))]) == 0
    assert order == ["limit_arenas", "run"]


def test_the_agent_builds_its_models_without_searching_for_pydantic_plugins(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from hisguard.agent.cli import main\n"
        f"rc = main(['check-config', '-c', {str(config(tmp_path))!r}])\n"
        "loader = sys.modules['pydantic.plugin._loader']\n"
        "print(rc, 'importlib.metadata' in sys.modules, tuple(loader.get_plugins()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.splitlines()[-1] == "0 False ()", out.stderr[-2000:]


def test_too_late_to_skip_the_plugin_search_is_said_and_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel

    class Built(BaseModel):  # pydantic has looked for plugins by now
        n: int = 0

    before = sys.modules[memory.PYDANTIC_PLUGIN_LOADER]
    assert memory.skip_pydantic_plugins() is False
    assert sys.modules[memory.PYDANTIC_PLUGIN_LOADER] is before
    assert Built(n=2).n == 2


def test_a_pydantic_wanting_more_of_its_plugin_loader_gets_the_real_one() -> None:
    code = (
        "import sys\n"
        "from hisguard.agent.memory import PYDANTIC_PLUGIN_LOADER, skip_pydantic_plugins\n"
        "assert skip_pydantic_plugins()\n"
        "fake = sys.modules[PYDANTIC_PLUGIN_LOADER]\n"
        "assert fake.get_plugins() == ()\n"
        "real_attr = fake._plugins\n"  # an attribute only the real loader has
        "assert sys.modules[PYDANTIC_PLUGIN_LOADER] is not fake\n"
        "print('ok', real_attr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
