"""Observation → incident: which of the plan's six triggers a failed condition starts, its scope and severity.

One table, read like the plan (2.4). Scope comes from where the failed thing sits in the
hospital (configuration), and the suggested severity from the scope (1.4): whole hospital →
critical, a department → urgent, no business impact → routine. A rule may cap the severity
(degraded performance is never more than urgent) or raise its floor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from string import Formatter
from typing import Any

from hisguard.checks.base import Impact, Observation
from hisguard.plan import Scope, Severity, Text, Trigger, functions_of, scope_for, severity_for


@dataclass(frozen=True)
class Rule:
    trigger: Trigger
    title: Text  # may use {label} (what failed), {host} (this agent), {value}
    floor: Severity | None = None
    cap: Severity | None = None


T1, T2 = Trigger.HARDWARE, Trigger.SOFTWARE

RULES: dict[str, Rule] = {
    # 2.4(1) backbone network, switching equipment or main server hardware failure
    "ping.reachable": Rule(T1, Text("{label} 网络不可达", "{label} is unreachable on the network")),
    # Nothing could be sent to any ping target: the agent's own interface or route, one incident (AGENT_NETWORK).
    "ping.agent_network": Rule(
        T1,
        Text(
            "{host} 本机网络故障，无法向任何目标发包（{label}）",
            "{host}: own network failing, cannot send to any target ({label})",
        ),
        floor=Severity.URGENT,
    ),
    "host.mount": Rule(T1, Text("{host} 磁盘 {label} 丢失（未挂载）", "{host}: disk {label} is gone (not mounted)")),
    # 2.4(2) server OS or management software failure: crashed services, reboot loops, exhaustion
    "host.process": Rule(T2, Text("{host} 必需进程 {label} 未运行", "{host}: required process {label} is not running")),
    "host.service": Rule(T2, Text("{host} 必需服务 {label} 未运行", "{host}: required service {label} is not running")),
    "host.reboot_loop": Rule(T2, Text("{host} 反复重启", "{host} is restarting repeatedly (reboot loop)")),
    "host.cpu": Rule(T2, Text("{host} CPU 资源耗尽", "{host}: CPU exhausted"), cap=Severity.URGENT),
    "host.memory": Rule(T2, Text("{host} 内存耗尽", "{host}: memory exhausted"), cap=Severity.URGENT),
    "host.disk": Rule(
        T2, Text("{host} 磁盘 {label} 空间将满", "{host}: disk {label} nearly full"), cap=Severity.URGENT
    ),
    # -- Windows event log (checks/winevent.py): events by ID/provider/EventData, held failed for a while --
    "winevent.disk": Rule(T1, Text("{host} 磁盘 {label} 报告硬件错误", "{host}: disk {label} reports hardware errors")),
    "winevent.hardware": Rule(T1, Text("{host} 发生严重硬件错误（WHEA）", "{host}: fatal hardware error (WHEA)")),
    "winevent.hardware_corrected": Rule(
        T1,
        Text("{host} 已更正硬件错误频发（{value:.0f} 次），硬件将坏", "{host}: {value:.0f} corrected hardware errors"),
        cap=Severity.URGENT,
    ),
    "winevent.sql_io": Rule(
        T1, Text("{host} SQL Server {label} 读写磁盘出错（823/825）", "{host}: SQL Server {label} disk I/O errors")
    ),
    "winevent.unexpected_shutdown": Rule(
        T2, Text("{host} 意外关机或崩溃后重启", "{host} restarted after an unexpected shutdown or crash")
    ),
    "winevent.service_crash": Rule(
        T2, Text("{host} 服务 {label} 意外终止", "{host}: service {label} terminated unexpectedly")
    ),
    "winevent.filesystem": Rule(
        T2, Text("{host} 卷 {label} 文件系统损坏", "{host}: file system on volume {label} is corrupt")
    ),
    "winevent.sql_suspect": Rule(
        Trigger.DATABASE,
        Text("{host} SQL Server {label} 数据页损坏（824），数据库可能置疑", "{host}: SQL Server {label} pages damaged"),
    ),
    "winevent.sql_log_full": Rule(
        Trigger.DATABASE,
        Text("{host} 数据库 {label} 事务日志已满（9002），无法写入", "{host}: transaction log of {label} is full"),
    ),
    # -- 2.4(5) virus (checks/antivirus.py, checks/canary.py). The role in the check name decides urgency:
    # a workstation hit is routine (guide by phone), a server hit urgent (engineers on site), a tripped
    # canary critical. A detection is an event held open for the probe's detection_hold, then cleared.
    "av.detection": Rule(
        Trigger.VIRUS, Text("{host} 检出病毒：{label}", "{host}: virus detected: {label}"), cap=Severity.ROUTINE
    ),
    "av.detection.server": Rule(
        Trigger.VIRUS,
        Text("服务器 {host} 检出病毒：{label}", "Server {host}: virus detected: {label}"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "av.protection": Rule(
        Trigger.VIRUS,
        Text("{host} 防病毒防护已关闭：{label}", "{host}: antivirus protection off: {label}"),
        cap=Severity.ROUTINE,
    ),
    "av.protection.server": Rule(
        Trigger.VIRUS,
        Text("服务器 {host} 防病毒防护已关闭：{label}", "Server {host}: antivirus protection off: {label}"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "av.signatures": Rule(
        Trigger.VIRUS, Text("{host} {label} 病毒库过期", "{host}: {label} signatures out of date"), cap=Severity.ROUTINE
    ),
    "canary.tripped": Rule(
        Trigger.VIRUS,
        Text("{host} 勒索诱饵文件 {label} 被改动，疑似勒索病毒", "{host}: ransomware canary {label} was tampered with"),
        floor=Severity.CRITICAL,
    ),
    "canary.tripped.server": Rule(
        Trigger.VIRUS,
        Text(
            "服务器 {host} 勒索诱饵文件 {label} 被改动，疑似勒索病毒",
            "Server {host}: ransomware canary {label} tampered with",
        ),
        floor=Severity.CRITICAL,
    ),
    "canary.rename_burst": Rule(
        Trigger.VIRUS,
        Text(
            "{host} 大量文件被改为异常扩展名，疑似勒索加密",
            "{host}: burst of renames to unusual extensions (ransomware?)",
        ),
        floor=Severity.URGENT,
    ),
    "canary.rename_burst.server": Rule(
        Trigger.VIRUS,
        Text(
            "服务器 {host} 大量文件被改为异常扩展名，疑似勒索加密",
            "Server {host}: burst of renames to unusual extensions",
        ),
        floor=Severity.CRITICAL,
    ),
    # -- 2.4(3)/(4) HIS database (checks/database/). Scope: the server's impact for server-wide checks,
    # the subsystem's departments for tables, row counts and anomaly rules. Patient-fee anomalies
    # outrank hospital-account anomalies (2.6: patient fees are put right first).
    "db.connect": Rule(T2, Text("{label} 数据库服务无法连接", "{label}: database service cannot be reached")),
    "db.restart": Rule(
        T2, Text("{label} 数据库服务刚刚重启", "{label}: database service restarted"), cap=Severity.URGENT
    ),
    # "HIS 卡死": sessions queued behind one head blocker. Scope from the locked tables' subsystems.
    "db.frozen": Rule(
        T2,
        Text(
            "{label} 数据库卡死：{blocked} 个会话被会话 {blocker}（{who}）阻塞 {wait_s} 秒，表 {tables}",
            "{label}: database frozen: {blocked} sessions blocked by session {blocker} ({who}) for {wait_s} s "
            "on {tables}",
        ),
    ),
    "db.idle_in_transaction": Rule(
        T2,
        Text(
            "{label} 会话 {session}（{who}）开着事务空闲 {age_s} 秒并持有锁，可能造成卡死",
            "{label}: session {session} ({who}) idle in a transaction holding locks for {age_s} s",
        ),
        cap=Severity.URGENT,
    ),
    "db.long_transaction": Rule(
        T2,
        Text(
            "{label} 长事务：会话 {session}（{who}）的事务已持续 {age_s} 秒",
            "{label}: long transaction: session {session} ({who}) open for {age_s} s",
        ),
        cap=Severity.ROUTINE,
    ),
    # Refused because full: every HIS client is refused too.
    "db.connections.full": Rule(
        T2,
        Text(
            "{label} 连接已满，新登录被拒绝（{what_zh}：{in_use}/{limit}）",
            "{label}: connections used up, new logins refused ({what_en}: {in_use}/{limit})",
        ),
    ),
    "db.connections": Rule(
        T2,
        Text(
            "{label} 连接数接近上限（{what_zh}：{in_use}/{limit}）",
            "{label}: connections near the limit ({what_en}: {in_use}/{limit})",
        ),
        cap=Severity.URGENT,
    ),
    "db.state": Rule(
        Trigger.DATABASE, Text("数据库 {label} 置疑或不可用", "Database {label} is suspect or unavailable")
    ),
    "db.corruption": Rule(
        Trigger.DATABASE,
        Text("数据库 {label} 出现损坏页或 I/O 错误（823/824/825）", "Database {label}: damaged pages / I/O errors"),
        floor=Severity.URGENT,
    ),
    "db.table": Rule(
        Trigger.DATABASE,
        Text("数据表 {label} 被删除或丢失（与基线相比）", "Table {label} deleted or lost (against the baseline)"),
        floor=Severity.URGENT,
    ),
    "db.table.renamed": Rule(
        Trigger.DATABASE,
        Text("数据表 {label} 被改名为 {renamed_to}（与基线相比）", "Table {label} renamed to {renamed_to}"),
        floor=Severity.URGENT,
    ),
    # A dropped, narrowed or retyped column breaks the application; an added or widened one does not.
    "db.column.broken": Rule(
        Trigger.DATABASE,
        Text("数据表 {label} 的列被删除或改窄（与基线相比）", "Table {label}: columns dropped or narrowed"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "db.column": Rule(
        Trigger.DATABASE,
        Text("数据表 {label} 新增或放宽了列（与基线相比）", "Table {label}: columns added or widened"),
        cap=Severity.ROUTINE,
    ),
    "db.rows": Rule(
        Trigger.DATA_LOSS,
        Text(
            "子系统 {label} 大面积数据丢失：{worst} 减少 {percent}%",
            "Subsystem {label}: large-scale data loss: {worst} down {percent}%",
        ),
        floor=Severity.URGENT,
    ),
    "db.anomaly.patient_fee": Rule(
        Trigger.DATA_LOSS,
        Text("患者费用数据异常：{label}", "Patient fee data anomaly: {label}"),
        floor=Severity.URGENT,
    ),
    "db.anomaly.accounting": Rule(
        Trigger.DATA_LOSS,
        Text("医院账目数据异常：{label}", "Hospital account data anomaly: {label}"),
        cap=Severity.URGENT,
    ),
    "db.anomaly": Rule(Trigger.DATA_LOSS, Text("数据异常：{label}", "Data anomaly: {label}"), cap=Severity.URGENT),
    "db.backup": Rule(
        Trigger.DATA_LOSS, Text("数据库 {label} 备份超期", "Database {label}: backup overdue"), cap=Severity.ROUTINE
    ),
    "db.backup.urgent": Rule(
        Trigger.DATA_LOSS,
        Text("数据库 {label} 备份超期", "Database {label}: backup overdue"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "db.log_full": Rule(
        Trigger.DATA_LOSS,
        Text("数据库 {label} 事务日志将满（9002）", "Database {label}: transaction log nearly full (9002)"),
        cap=Severity.ROUTINE,
    ),
    "db.log_full.urgent": Rule(
        Trigger.DATA_LOSS,
        Text("数据库 {label} 事务日志将满（9002）", "Database {label}: transaction log nearly full (9002)"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "db.checkdb": Rule(
        Trigger.DATABASE,
        Text("数据库 {label} 长期未做一致性检查（CHECKDB）", "Database {label}: no recent good CHECKDB"),
        cap=Severity.ROUTINE,
    ),
    # -- 2.4(2) the HIS application and its interfaces (checks/service/): a service that does not answer
    # (refused, hung, wrong answer) has the target's scope; slowness is at most urgent; an expiring
    # certificate routine, urgent within the last days. A target's conditions make one incident.
    "service.answer": Rule(T2, Text("{label} 服务无正常应答", "{label} is not answering properly")),
    "service.latency": Rule(
        T2,
        Text("{label} 响应过慢（{value:.0f} 毫秒）", "{label} answers too slowly ({value:.0f} ms)"),
        cap=Severity.URGENT,
    ),
    "service.cert": Rule(
        T2,
        Text("{label} 证书 {value:.0f} 天内到期", "{label}: certificate expires within {value:.0f} days"),
        cap=Severity.ROUTINE,
    ),
    "service.cert.urgent": Rule(
        T2,
        Text(
            "{label} 证书即将到期（剩 {value:.1f} 天）", "{label}: certificate about to expire ({value:.1f} days left)"
        ),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    # -- switches, servers and UPS units over SNMP (checks/snmp/). Scope and the folding of the hosts
    # behind a failed switch come from [topology] (agent/topology.py, the FOLDS pass below).
    "snmp.reachable": Rule(T1, Text("{label} 不可达（SNMP 与 ping 均无响应）", "{label} is down (no SNMP, no ping)")),
    "snmp.unreached": Rule(
        T1,
        Text(
            "{label} 自配置以来从未应答（SNMP 与 ping 均无响应），请核对地址/团体名",
            "{label} has never answered since it was configured (no SNMP, no ping): check address/community",
        ),
    ),
    "snmp.interface": Rule(T1, Text("{label} 端口断开", "{label}: port is down")),
    # Redundant uplinks (LAG members or uplink_groups): one member down costs the redundancy, not the service.
    "snmp.uplink_redundancy": Rule(
        T1,
        Text("{label} 冗余上联部分断开，已失去冗余", "{label}: redundancy lost (part of a redundant uplink is down)"),
        cap=Severity.URGENT,
    ),
    "snmp.uplink_group": Rule(T1, Text("{label} 冗余上联全部断开", "{label}: every redundant uplink is down")),
    "snmp.if_errors": Rule(
        T1, Text("{label} 端口错误包激增", "{label}: port errors climbing fast"), cap=Severity.URGENT
    ),
    "snmp.if_flap": Rule(
        T1,
        Text("{label} 端口反复断开又恢复（震荡）", "{label}: port keeps going down and up (flapping)"),
        cap=Severity.URGENT,
    ),
    "snmp.hardware": Rule(T1, Text("{label} 硬件告警（风扇/电源/板卡）", "{label}: hardware alarm (fan/power/module)")),
    # The device still forwards and pings: only its management plane is lost.
    "snmp.agent": Rule(
        T2,
        Text("{label} 管理软件无响应（ping 正常，SNMP 无应答）", "{label}: management software dead (pings, no SNMP)"),
        cap=Severity.URGENT,
    ),
    "snmp.restart": Rule(T2, Text("{label} 设备重启", "{label} restarted"), cap=Severity.URGENT),
    "snmp.restart.late": Rule(
        T2,
        Text("{label} 曾经重启（发现时已过去较久）", "{label} restarted (found only later)"),
        cap=Severity.ROUTINE,
    ),
    "snmp.reboot_loop": Rule(T2, Text("{label} 反复重启", "{label} is restarting repeatedly (reboot loop)")),
    "snmp.cpu": Rule(T2, Text("{label} CPU 持续过载", "{label}: CPU overloaded"), cap=Severity.URGENT),
    "snmp.memory": Rule(T2, Text("{label} 内存持续过高", "{label}: memory exhausted"), cap=Severity.URGENT),
    "snmp.trap_storm": Rule(
        T2, Text("{label} 告警风暴（陷阱泛滥）", "{label}: trap storm (flood of SNMP traps)"), cap=Severity.URGENT
    ),
    "snmp.temperature": Rule(
        Trigger.FORCE_MAJEURE,
        Text(
            "{label} 温度过高（{value}°C），疑似机房过热/火情",
            "{label} over temperature ({value} °C): room overheating or fire?",
        ),
        floor=Severity.URGENT,
    ),
    # UPS: the three conditions of one unit merge into one incident; severity rises as runtime falls.
    "snmp.ups.on_battery": Rule(
        Trigger.FORCE_MAJEURE, Text("UPS {label} 电池供电", "UPS {label} on battery"), cap=Severity.URGENT
    ),
    "snmp.ups.runtime_low": Rule(
        Trigger.FORCE_MAJEURE,
        Text("UPS {label} 电池续航不足", "UPS {label}: battery runtime low"),
        floor=Severity.URGENT,
        cap=Severity.URGENT,
    ),
    "snmp.ups.depleting": Rule(
        Trigger.FORCE_MAJEURE,
        Text("UPS {label} 电池即将耗尽", "UPS {label}: battery about to run out"),
        floor=Severity.CRITICAL,
    ),
    # No protection, no output, or an alarm: urgent; critical where the UPS is configured hospital-critical.
    "snmp.ups.bypass": Rule(
        Trigger.FORCE_MAJEURE,
        Text("UPS {label} 处于旁路，负载无保护", "UPS {label} on bypass (load unprotected)"),
        floor=Severity.URGENT,
    ),
    "snmp.ups.output_off": Rule(
        Trigger.FORCE_MAJEURE, Text("UPS {label} 输出关闭", "UPS {label}: output is off"), floor=Severity.URGENT
    ),
    "snmp.ups.alarm": Rule(
        Trigger.FORCE_MAJEURE, Text("UPS {label} 告警", "UPS {label} reports an alarm"), floor=Severity.URGENT
    ),
    "snmp.ups.battery_fault": Rule(
        Trigger.FORCE_MAJEURE,
        Text("UPS {label} 电池故障或需更换", "UPS {label}: battery failed or needs replacing"),
        floor=Severity.URGENT,
    ),
}


def scope_of(impact: Impact) -> Scope:
    return scope_for(impact.hospital_critical, impact.all_departments())


@dataclass
class Incident:
    """What the agent believes is wrong now, in the plan's terms, under a stable key."""

    key: str
    trigger: Trigger
    severity: Severity
    scope: Scope
    title: Text
    departments: list[str]
    conditions: list[tuple[str, str, str]]  # (job, check, subject) whose failure this is
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def department(self) -> str | None:
        return self.departments[0] if len(self.departments) == 1 else None

    def signature(self) -> tuple[Any, ...]:
        """What, when it changes, must be told to the server again."""
        return (
            int(self.trigger),
            self.severity.value,
            self.scope.value,
            tuple(self.departments),
            tuple(sorted(self.conditions)),
        )


@dataclass(frozen=True)
class Failing:
    """A condition the agent confirmed as failed (after N-of-M), with its latest observation."""

    job: str
    obs: Observation


def _title(rule: Rule, values: dict[str, Any]) -> Text:
    """A rule's title may also name facts from the observation's detail ({blocker}, {percent}…); one the
    observation does not carry reads "?" rather than failing the whole classification."""
    texts = (rule.title.zh, rule.title.en)
    names = {f.split(".")[0].split("[")[0] for t in texts for _, f, _, _ in Formatter().parse(t) if f}
    return rule.title.format(**{**dict.fromkeys(names, "?"), **values})


def incident_for(host: str, failing: Failing) -> Incident | None:
    obs = failing.obs
    rule = RULES.get(obs.check)
    if rule is None:
        return None
    scope = scope_of(obs.impact)
    evidence = {"check": obs.check, "subject": obs.subject, "value": obs.value, **obs.detail}
    if obs.name:
        evidence["name"] = obs.name
    return Incident(
        key=f"{host}/{obs.check}/{obs.subject}",
        trigger=rule.trigger,
        severity=severity_for(scope, rule.floor, rule.cap),
        scope=scope,
        title=_title(rule, {**obs.detail, "label": obs.label, "host": host, "value": obs.value}),
        departments=obs.impact.all_departments(),
        conditions=[(failing.job, obs.check, obs.subject)],
        evidence=evidence,
    )


# Passes over the whole set, e.g. folding the hosts behind a failed switch into the switch's incident.
Fold = Callable[[list[Incident]], list[Incident]]


def _agent_network_fold(incidents: list[Incident]) -> list[Incident]:
    """This host cannot send at all: one incident for its own network, its targets cut off as evidence.

    The targets' conditions stay failed underneath, so a partial repair shows the targets still cut
    off at once instead of looking like a recovery; a target answering again while its failure is
    not yet cleared stays folded too. Only targets the network really reached (silence, an ICMP
    error) keep their own incidents. Runs before the topology fold, so targets the agent cannot
    reach are not counted as devices lost.
    """
    own = [i for i in incidents if i.evidence.get("check") == "ping.agent_network"]
    if not own:
        return incidents
    jobs = {c[0] for i in own for c in i.conditions}
    cut_off = [
        i
        for i in incidents
        if i.evidence.get("check") == "ping.reachable"
        and i.evidence.get("outcome") in ("unsendable", "answered")
        and i.conditions[0][0] in jobs
    ]
    first = own[0]
    merged = replace(
        first,
        conditions=sorted({c for i in own for c in i.conditions}),
        evidence={
            **first.evidence,
            "targets_cut_off": [i.evidence.get("name") or i.evidence.get("subject") for i in cut_off][:200],
        },
    )
    return [merged, *(i for i in incidents if i not in own and i not in cut_off)]


FOLDS: list[Fold] = [_agent_network_fold]

# A service target's conditions, the one whose title speaks first (severity is the worst of them).
SERVICE_CHECKS = ("service.answer", "service.cert.urgent", "service.cert", "service.latency")


def _why(evidence: dict[str, Any]) -> Text | None:
    """How a service failed to answer, in a few words for the title."""
    outcome, error = evidence.get("outcome"), str(evidence.get("error") or "")[:120]
    if outcome == "timeout":
        t = evidence.get("timeout_s")
        return Text(f"{t:g} 秒内无应答，服务可能挂起", f"no answer within {t:g}s: hung?")
    if outcome == "refused":
        return Text("拒绝连接", "connection refused")
    if outcome == "unreachable":
        return Text(f"网络不可达：{error}", f"unreachable: {error}")
    if outcome == "wrong_answer":
        return Text(f"应答错误：{error}", f"wrong answer: {error}")
    return None


MAX_KEY = 400  # the server's limit for an incident key


def merge_services(incidents: list[Incident]) -> list[Incident]:
    """One incident per service target (not answering, slow, certificate): as its worst condition, under
    one key, so that a slow service going down, or a certificate nearing expiry, updates one incident."""
    groups: dict[tuple[str, str], list[Incident]] = {}
    rest = []
    for inc in incidents:
        if inc.evidence.get("check") in SERVICE_CHECKS:
            groups.setdefault((inc.key.split("/", 1)[0], str(inc.evidence["subject"])), []).append(inc)
        else:
            rest.append(inc)
    for (host, subject), incs in groups.items():
        incs.sort(key=lambda i: SERVICE_CHECKS.index(i.evidence["check"]))
        lead = incs[0]
        title = lead.title
        said = _why(lead.evidence) if lead.evidence["check"] == "service.answer" else None
        if said is not None:
            title = Text(f"{title.zh}（{said.zh}）", f"{title.en} ({said.en})")
        key = f"{host}/service/{subject}"
        if len(key) > MAX_KEY:
            key = f"{host}/service/{hashlib.sha256(subject.encode()).hexdigest()[:32]}"
        rest.append(
            replace(
                lead,
                key=key,
                severity=max((i.severity for i in incs), key=lambda s: s.rank),
                title=title,
                conditions=[c for i in incs for c in i.conditions],  # the lead's first: folds read it
                evidence={**lead.evidence, "conditions": [i.evidence["check"] for i in incs]},
            )
        )
    return rest


FOLDS.append(merge_services)


def _topology_fold(incidents: list[Incident]) -> list[Incident]:
    # agent/topology.py: one incident per UPS, hosts behind a failed switch folded into it, force majeure.
    from hisguard.agent.topology import fold

    return fold(incidents)


FOLDS.append(_topology_fold)


def _merge(incs: list[Incident], key: str, title: Text, evidence: dict[str, Any]) -> Incident:
    worst = max(incs, key=lambda i: i.severity.rank)
    return Incident(
        key=key,
        trigger=worst.trigger,
        severity=worst.severity,
        scope=worst.scope,
        title=title,
        departments=list(dict.fromkeys(d for i in incs for d in i.departments)),
        conditions=sorted({c for i in incs for c in i.conditions}),
        evidence={**worst.evidence, **evidence},
    )


def _ports_fold(incidents: list[Incident]) -> list[Incident]:
    """Several ports of one device down: one incident for the device, the ports its evidence."""
    by_device: dict[tuple[str, str], list[Incident]] = {}
    rest = []
    for inc in incidents:
        check, device = inc.evidence.get("check"), inc.evidence.get("device")
        if check in ("snmp.interface", "snmp.uplink_group") and isinstance(device, str) and len(inc.conditions) == 1:
            by_device.setdefault((inc.key.split("/", 1)[0], device), []).append(inc)
        else:
            rest.append(inc)
    for (host, device), incs in by_device.items():
        if len(incs) == 1:
            rest += incs
            continue
        ports = [str(i.evidence.get("name") or i.evidence.get("port")) for i in incs]
        shown = "、".join(ports[:6]) + ("…" if len(ports) > 6 else "")
        title = Text(
            f"{device} {len(incs)} 个端口断开：{shown}", f"{device}: {len(incs)} ports down: {', '.join(ports[:6])}"
        )
        parts = [{k: i.evidence[k] for k in ("port", "if_index", "alias", "check") if k in i.evidence} for i in incs]
        rest.append(_merge(incs, f"{host}/snmp.interface/{device}", title, {"ports": parts}))
    return rest


def _canary_fold(incidents: list[Incident]) -> list[Incident]:
    """One ransomware run on one host is one incident: its tripped canaries and rename burst are evidence."""
    by_host: dict[str, list[Incident]] = {}
    rest = []
    for inc in incidents:
        if str(inc.evidence.get("check", "")).startswith("canary.") and len(inc.conditions) == 1:
            by_host.setdefault(inc.key.split("/", 1)[0], []).append(inc)
        else:
            rest.append(inc)
    for host, incs in by_host.items():
        tripped = [i for i in incs if str(i.evidence.get("check", "")).startswith("canary.tripped")]
        canaries = [str(i.evidence.get("name") or i.evidence.get("subject")) for i in tripped]
        if len(incs) == 1:
            title = incs[0].title
        elif canaries:
            title = Text(
                f"{host} 疑似勒索病毒：{len(canaries)} 个诱饵文件被改动（{'、'.join(canaries[:5])}）",
                f"{host}: suspected ransomware: {len(canaries)} canaries tampered with ({', '.join(canaries[:5])})",
            )
        else:
            title = max(incs, key=lambda i: i.severity.rank).title
        renames = [i.evidence for i in incs if str(i.evidence.get("check", "")).startswith("canary.rename_burst")]
        evidence: dict[str, Any] = {"canaries": canaries, "canary_count": len(canaries)}
        if renames:
            evidence["renames"] = {k: renames[0][k] for k in ("count", "samples", "window_s") if k in renames[0]}
        rest.append(_merge(incs, f"{host}/canary", title, evidence))
    return rest


FOLDS += [_ports_fold, _canary_fold]


def classify(host: str, failing: Iterable[Failing]) -> list[Incident]:
    """The incidents that the currently failed conditions amount to."""
    incidents = [i for f in failing if (i := incident_for(host, f)) is not None]
    for fold in FOLDS:
        incidents = fold(incidents)
    return incidents


def functions(incident: Incident) -> list[str]:
    return [f.value for f in functions_of(incident.departments)]
