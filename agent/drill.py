"""`hisguard-agent drill`: a simulated incident sent through the agent's real delivery path (2.8).

The event is spooled in the same outbox as real reports and delivered by the same sender, so a
drill also exercises the agent's token, network path and the server's ingest. It is marked
`drill`: the server runs the whole plan on it, marks every message 演练/DRILL and keeps it out of
real statistics. `--end` reports the simulated fault recovered: the drill's incident and case
recover on the server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from hisguard.agent.config import AgentConfig
from hisguard.agent.delivery import DeliveryError, Sender
from hisguard.agent.store import StateStore
from hisguard.bilingual import fail, say
from hisguard.plan import Scope, Text, Trigger, functions_of, severity_for
from hisguard.report import IncidentEvent, utcnow

STATE = "drill.json"  # the open drill events, so that --end recovers the same key
NONE_OPEN = Text("本代理没有进行中的触发条件 {t} 演练", "no open drill of trigger {t} on this agent")
ALREADY_OPEN = Text(
    "触发条件 {t} 的演练已在进行，请先结束（hisguard-agent drill --trigger {t} --end）",
    "a drill of trigger {t} is already open: end it first (hisguard-agent drill --trigger {t} --end)",
)
STARTED = Text("演练开始：触发条件 {t}，键 {key}", "drill started: trigger {t}, key {key}")
ENDED = Text("已报告模拟故障恢复：触发条件 {t}，键 {key}", "simulated fault reported recovered: trigger {t}, key {key}")
CLOSE_ON_SERVER = Text(
    "服务器上的演练由服务部经理填写发现的问题与改进后关闭（控制台“演练与计划”，或 POST /api/v1/drills/ID/close）",
    "the service manager closes the drill on the server with its problems and improvements "
    "(console: Drills & schedule, or POST /api/v1/drills/ID/close)",
)
KEPT = Text("未送达，已保存在发件箱，由运行中的代理重发", "not delivered, kept in the outbox for the running agent")
DELIVERED = Text("已送达 {url}（{n} 份报告）", "delivered to {url} ({n} reports)")


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
            fail(NONE_OPEN, t=trigger)
            store.close()
            return 2
        event = {**event, "id": str(uuid.uuid4()), "state": "resolved", "observed_at": utcnow().isoformat()}
    else:
        if name in open_drills:
            fail(ALREADY_OPEN, t=trigger)
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
    say(ENDED if end else STARTED, t=trigger, key=event["key"])
    if error:
        say(KEPT, error)
        return 1
    say(DELIVERED, url=cfg.server.url, n=delivered)
    if end:
        say(CLOSE_ON_SERVER)
    return 0
