"""The documented antivirus and canary examples in config.example.toml load as they are written."""

from __future__ import annotations

import re
from pathlib import Path

from hisguard.agent.config import load_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def _uncommented(kind: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index(f"# [[probe.{kind}]]")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break
        body = line[2:]
        if re.match(r"^(\[|[A-Za-z_]+ = )", body):  # TOML lines, not the prose between them
            block.append(body)
    return "\n".join(block)


def test_example_antivirus_and_canary_sections_load(tmp_path):
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(
        '[server]\nurl = "http://127.0.0.1:8470"\ntoken = "x"\n\n'
        + _uncommented("antivirus")
        + "\n\n"
        + _uncommented("canary")
        + "\n",
        encoding="utf-8",
    )
    cfg = load_config(cfg_file)
    jobs = {j.name: j.config for j in cfg.jobs}
    av, bait = jobs["antivirus"], jobs["canary"]
    assert av.role == "workstation" and av.clamd is not None and av.defender is not None
    (log,) = av.logs
    assert log.encoding == "gbk" and log.actions["已隔离"] == "quarantined"
    assert bait.role == "db_server" and len(bait.folders) == 2 and bait.names[0].startswith("门诊收费")
