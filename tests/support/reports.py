"""Report items as an agent sends them, for tests that post to a server."""

from __future__ import annotations

import uuid
from typing import Any

from hisguard.report import utcnow


def incident(key: str, **overrides: Any) -> dict[str, Any]:
    """An open, routine, host-scope trigger-1 incident event under `key`, with a fresh id."""
    body: dict[str, Any] = {
        "type": "incident",
        "id": str(uuid.uuid4()),
        "key": key,
        "state": "open",
        "trigger": 1,
        "severity": "routine",
        "scope": "host",
        "host": "ws-01",
        "title_zh": "测试",
        "title_en": "test",
        "observed_at": utcnow().isoformat(),
    }
    body.update(overrides)
    return body
