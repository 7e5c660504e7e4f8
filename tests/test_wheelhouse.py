"""Offline install: scripts/wheelhouse.sh builds a wheelhouse, its install.sh installs into a fresh venv, no index.

Tests talk to no package registry: the "connected machine" is simulated by a local wheel
directory made from this environment's installed distributions (repacked as wheels), offered
to pip as its only source. The install then runs with --no-index from the wheelhouse alone.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "wheelhouse.sh"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions these requirements pull in (markers evaluated, no extras)."""
    found: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        key = _norm(req.name)
        if key in found:
            continue
        dist = md.distribution(req.name)
        found[key] = dist
        todo.extend(Requirement(r) for r in (dist.requires or []))
    return found


def repack(dist: md.Distribution, dest: Path) -> Path:
    """An installed distribution back into a wheel (its files as RECORD lists them)."""
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = dest / f"{name}-{dist.version}-{tags[0]}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in dist.files or []:
            if str(f).startswith("..") or "__pycache__" in str(f):
                continue  # scripts are regenerated at install; bytecode is not needed
            src = Path(dist.locate_file(f))
            if src.is_file():
                zf.write(src, str(f))
    return path


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.mark.slow
def test_wheelhouse_build_then_offline_install_into_a_fresh_venv(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    core = [r for r in (md.requires("hisguard") or []) if "extra ==" not in r]
    for dist in closure([*core, "setuptools>=68", "wheel"]).values():
        repack(dist, seed)

    house = tmp_path / "wheelhouse"
    build = subprocess.run(
        ["bash", str(SCRIPT), "build", str(house), ""],
        env=offline_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(seed), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheels = sorted(p.name for p in house.glob("*.whl"))
    assert any(w.startswith("hisguard-0") for w in wheels) and any(w.startswith("pydantic_core") for w in wheels)
    assert not (ROOT / "build").exists() or (ROOT / "build").stat().st_mtime < house.stat().st_mtime

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    inst = subprocess.run(
        ["sh", str(house / "install.sh"), str(venv)],
        env=offline_env(PYTHON=base_python),  # no index, no find-links but the wheelhouse itself
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    assert "installed into" in inst.stdout and "hisguard-agent 0." in inst.stdout

    conf = tmp_path / "agent.toml"
    conf.write_text(
        '[agent]\nname = "ward-7"\nstate_dir = "state"\n[server]\nurl = "http://127.0.0.1:9"\ntoken = "x"\n'
        '[[probe.ping]]\ntargets = [{ address = "127.0.0.1" }]\n',
        encoding="utf-8",
    )
    check = subprocess.run(
        [str(venv / "bin" / "hisguard-agent"), "check-config", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    # The installed agent is the one from the wheelhouse, not this checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hisguard.agent, sys; print(hisguard.agent.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(venv)), where.stdout


def test_usage_without_a_command_exits_2() -> None:
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "build-windows" in out.stdout and "--only-binary=:all:" in out.stdout
