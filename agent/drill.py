"""`hisguard-agent drill`: a simulated incident sent through the agent's real delivery path (2.8).

The event is spooled in the same outbox as real reports and delivered by the same sender, so a
drill also exercises the agent's token, network path and the server's ingest. It is marked
`drill`: the server runs the whole plan on it, marks every message 演练/DRILL and keeps it out of
real statistics. `--end` reports the simulated fault recovered (the drill is then closed and
evaluated on the server).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from hisguard.agent.config import AgentConfig
from hisguard.agent.delivery import DeliveryError, Sender
from hisguard.agent.store import StateStore
from hisguard.plan import Scope, Text, Trigger, functions_of, severity_for
from hisguard.report import IncidentEvent, utcnow

STATE = "drill.json"  # the open drill events, so that --end recovers the same key


def drill_event(cfg: AgentConfig, trigger: Trigger, scope: Scope, who: str) -> dict[str, Any]:
    at = utcnow()
    departments = list(cfg.agent.departments) or ([cfg.agent.department] if cfg.agent.department else [])
    if scope is not Scope.DEPARTMENT:
        departments = [] if scope is Scope.HOST else departments
    title = Text(
        f"模拟故障（{scope.text.zh}）：{trigger.short.zh}",
        f"Simulated fault ({scope.text.en.lower()}): {trigger.short.en}",
    )
    return IncidentEvent(
        key=f"drill/{cfg.agent.name}/T{int(trigger)}/{at:%Y%m%dT%H%M%S}",
        state="open",
        trigger=trigger,
        severity=severity_for(scope),
        scope=scope,
        host=f"drill:{cfg.agent.name}"[:200],  # never grouped with the real host's incidents
        department=departments[0] if departments else None,
        departments=departments,
        functions=functions_of(departments),
        title_zh=title.zh,
        title_en=title.en,
        observed_at=at,
        evidence={"drill": True, "check": "drill", "started_by": who},
        drill=True,
    ).model_dump(mode="json")


def run(cfg: AgentConfig, trigger: int, scope: str, end: bool, who: str) -> int:
    store = StateStore(cfg.agent.state_dir / "agent.sqlite3")
    state_file = cfg.agent.state_dir / STATE
    try:
        open_drills: dict[str, dict[str, Any]] = json.loads(state_file.read_text()) if state_file.exists() else {}
    except ValueError:
        open_drills = {}
    name = str(int(trigger))
    if end:
        event = open_drills.pop(name, None)
        if event is None:
            print(f"没有进行中的触发条件 {trigger} 演练 / no open drill of trigger {trigger} on this agent")
            store.close()
            return 2
        event = {**event, "id": str(uuid.uuid4()), "state": "resolved", "observed_at": utcnow().isoformat()}
    else:
        if name in open_drills:
            print(
                f"触发条件 {trigger} 的演练已在进行 / a drill of trigger {trigger} is already open: end it first "
                f"(hisguard-agent drill --trigger {trigger} --end)"
            )
            store.close()
            return 2
        event = drill_event(cfg, Trigger(trigger), Scope(scope), who)
        open_drills[name] = event
    store.enqueue(event)  # the outbox: kept until the server says it stored it
    state_file.write_text(json.dumps(open_drills, ensure_ascii=False))

    async def deliver() -> tuple[int, str | None]:
        sender = Sender(cfg, store, cfg.token)
        try:
            return await sender.flush(), None
        except DeliveryError as exc:
            return 0, str(exc)
        finally:
            await sender.aclose()

    delivered, error = asyncio.run(deliver())
    store.close()
    what = "演练结束 / drill ended" if end else "演练开始 / drill started"
    print(f"{what}: trigger {trigger}, key {event['key']}")
    if error:
        print(f"未送达，已保存待重发 / not delivered, kept in the outbox for the running agent: {error}")
        return 1
    print(f"已送达 / delivered to {cfg.server.url} ({delivered} reports)")
    return 0
