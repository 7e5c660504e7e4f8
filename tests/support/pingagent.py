"""The agent configuration the ping end-to-end tests run: one ping job reporting to a real server."""

from __future__ import annotations

import json


def ping_agent_config(url: str, token: str, targets: list[str], name: str = "his-app-01", **ping: object) -> str:
    """`targets`: TOML inline tables (`{ address = "…", department = "…" }`); `ping`: the job's other keys."""
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in ping.items())
    rows = "".join(f"  {t},\n" for t in targets)
    return f"""
[agent]
name = "{name}"
state_dir = "state"
heartbeat_interval = 1

[server]
url = "{url}"
token = "{token}"
timeout = 2
retry_max = 1

[[probe.ping]]
name = "network"
{keys}targets = [
{rows}]
"""
