"""The console's own words in Chinese and English; the plan's words come from hisguard.plan (Text)."""

from __future__ import annotations

from hisguard.plan import ContinuityPhase, Scope, Severity, Text, Trigger

UI: dict[str, Text] = {
    "app": Text("HIS 应急监测", "HIS emergency console"),
    "overview": Text("总览", "Overview"),
    "drills": Text("演练与计划", "Drills & schedule"),
    "audit": Text("审计日志", "Audit log"),
    "logout": Text("退出", "Log out"),
    "login": Text("登录", "Log in"),
    "name": Text("用户名", "Name"),
    "password": Text("密码", "Password"),
    "login_failed": Text("用户名或密码错误", "Wrong name or password"),
    "locked": Text("连续失败次数过多，账户已锁定至 {until}", "Too many failures: account locked until {until}"),
    "csrf": Text("表单已过期，请重试", "The form expired; please try again"),
    "agents": Text("监测代理", "Agents"),
    "silent": Text("失联", "silent"),
    "open_cases": Text("未结案", "open cases"),
    "all_ok": Text("正常", "All well"),
    "respond_in": Text("响应剩余", "Respond within"),
    "overdue": Text("已超时", "overdue"),
    "acknowledged": Text("已响应", "acknowledged"),
    "no_sites": Text("尚无医院接入", "No site reports yet"),
    "site": Text("医院", "Site"),
    "switches": Text("交换机", "Switches"),
    "databases": Text("数据库", "Databases"),
    "antivirus": Text("防病毒", "Antivirus"),
    "topology": Text("拓扑", "Topology"),
    "cases": Text("事件单", "Cases"),
    "none": Text("无", "none"),
    "version": Text("版本", "Version"),
    "last_seen": Text("最近心跳", "Last heartbeat"),
    "department": Text("科室", "Department"),
    "failing": Text("异常项", "failing checks"),
    "host": Text("主机", "Host"),
    "chart_cpu": Text("CPU 使用率 %", "CPU %"),
    "chart_memory": Text("内存使用率 %", "Memory %"),
    "chart_disk": Text("磁盘使用率 %", "Disk %"),
    "chart_ping_loss": Text("Ping 丢包率 %", "Ping loss %"),
    "chart_ping_rtt": Text("Ping 往返时延 ms", "Ping RTT ms"),
    "chart_db": Text("数据库登录耗时 ms", "Database login time ms"),
    "chart_service_latency": Text("服务响应时间 ms", "Service response time ms"),
    # The host page's time range and charts.
    "range_1h": Text("近 1 小时", "Last hour"),
    "range_6h": Text("近 6 小时", "Last 6 hours"),
    "range_24h": Text("近 24 小时", "Last 24 hours"),
    "range_7d": Text("近 7 天", "Last 7 days"),
    "range_30d": Text("近 30 天", "Last 30 days"),
    "range_custom": Text("自定义时段", "Custom range"),
    "range_short_1h": Text("1 小时", "1 h"),
    "range_short_6h": Text("6 小时", "6 h"),
    "range_short_24h": Text("24 小时", "24 h"),
    "range_short_7d": Text("7 天", "7 d"),
    "range_short_30d": Text("30 天", "30 d"),
    "range_from": Text("从", "From"),
    "range_to": Text("到", "To"),
    "range_apply": Text("查看", "Show"),
    "range_bad": Text(
        "时间范围无效（开始须早于结束，且不超过 400 天），已显示近 24 小时。",
        "That time range is not valid (start before end, at most 400 days): showing the last 24 hours.",
    ),
    "range_zoom": Text("在图上拖动可放大所选时段", "Drag across a chart to zoom into that span"),
    "threshold": Text("阈值", "threshold"),
    "services": Text("业务服务与接口", "Services and interfaces"),
    "no_data": Text("暂无数据", "No data"),
    "latest": Text("最新观测", "Latest observations"),
    "case": Text("事件单", "Case"),
    "status": Text("状态", "Status"),
    "severity": Text("级别", "Severity"),
    "scope": Text("范围", "Scope"),
    "trigger": Text("触发条件", "Trigger"),
    "reported_at": Text("报告时间", "Reported"),
    "timeline": Text("时间线", "Timeline"),
    "plan": Text("应急预案步骤", "Plan checklist"),
    "plan_not_active": Text("预案未启动", "The plan is not active"),
    "backfill": Text("数据补录", "Back-fill"),
    "activation_steps": Text("预案启动（2.5）", "Activation (2.5)"),
    "trigger_steps": Text("处置清单（2.6）", "Checklist for the trigger (2.6)"),
    "plan_active": Text("执行中", "active"),
    "plan_completed": Text("已完成", "completed"),
    "clocks": Text("时限", "Clocks"),
    "notifications": Text("已发通知", "Notifications sent"),
    "incidents": Text("关联告警", "Incidents"),
    "done": Text("完成", "Done"),
    "done_by": Text("完成人", "done by"),
    "note": Text("备注", "Note"),
    "reason": Text("原因", "Reason"),
    "acknowledge": Text("确认响应", "Acknowledge"),
    "activate": Text("启动应急预案", "Activate the plan"),
    "resolve": Text("结案", "Resolve"),
    "raise": Text("提升级别", "Raise severity"),
    "reply": Text("书面答复", "Written reply"),
    "send": Text("提交", "Submit"),
    "open": Text("处理中", "open"),
    "resolved": Text("已恢复", "resolved"),
    "merged": Text("已合并", "merged"),
    "pending": Text("待到期", "pending"),
    "fired": Text("已到期", "fired"),
    "cancelled": Text("已取消", "cancelled"),
    "clock_response": Text("响应时限", "Response deadline"),
    "clock_written_reply": Text("书面答复时限", "Written reply due"),
    "review": Text("复盘与导出", "Review & export"),
    "drill": Text("演练", "drill"),
    "drill_cases": Text("演练事件单", "Drill cases"),
    "no_drill_data": Text(
        "尚无演练与计划数据（演练功能未启用或尚无记录）。",
        "No drills or schedule yet (drills not enabled or none recorded).",
    ),
    "schedule": Text("计划", "Schedule"),
    "actor": Text("操作人", "Actor"),
    "role": Text("角色", "Role"),
    "action": Text("操作", "Action"),
    "time": Text("时间", "Time"),
    "detail": Text("详情", "Detail"),
    "forbidden": Text("无权访问", "Not allowed"),
    "not_found": Text("未找到", "Not found"),
    "live": Text("实时", "live"),
    "lang_switch": Text("English", "中文"),
    "viewer": Text("院方信息科", "hospital IT"),
    "engineer": Text("工程师", "engineer"),
    "service_manager": Text("服务部经理", "service manager"),
    "admin": Text("管理员", "admin"),
    "hospital_contact": Text("院方联系人", "hospital contact"),
    "down": Text("中断", "down"),
    "up": Text("正常", "up"),
    "channel": Text("渠道", "Channel"),
    "contact": Text("联系人", "Contact"),
    "site_count": Text("{n} 家医院 · {m} 家有故障", "{n} sites · {m} in trouble"),
    "events_opened": Text("立案", "opened"),
}

# Timeline entries (case_events.kind).
EVENTS: dict[str, Text] = {
    "opened": Text("立案", "Case opened"),
    "reported": Text("院方报告", "Reported by the hospital"),
    "incident_linked": Text("关联告警", "Incident linked"),
    "merged": Text("并入其他事件单", "Merged into another case"),
    "case_merged": Text("合并事件单", "Case merged in"),
    "lead_changed": Text("主告警变更", "Lead incident changed"),
    "activated": Text("应急预案启动", "Emergency plan activated"),
    "acknowledged": Text("确认响应", "Acknowledged"),
    "severity_raised": Text("级别提升", "Severity raised"),
    "step_done": Text("步骤完成", "Step done"),
    "escalated": Text("升级", "Escalated"),
    "unanswered": Text("无人响应", "Unanswered"),
    "continuity": Text("业务连续性提示", "Business continuity advisory"),
    "resolved": Text("已恢复", "Resolved"),
    "written_reply": Text("书面答复", "Written reply"),
    "written_reply_overdue": Text("书面答复超时", "Written reply overdue"),
}


def t(key: str, lang: str, **values: object) -> str:
    text = UI.get(key)
    if text is None:
        return key
    out = text.get(lang)
    return out.format(**values) if values else out


def severity(value: str, lang: str) -> str:
    try:
        return Severity(value).text.get(lang)
    except ValueError:
        return value


def scope(value: str, lang: str) -> str:
    try:
        return Scope(value).text.get(lang)
    except ValueError:
        return value


def trigger(value: int, lang: str) -> str:
    try:
        return Trigger(value).short.get(lang)
    except ValueError:
        return Text("院方报告", "reported by the hospital").get(lang)


def event(kind: str, lang: str) -> str:
    return EVENTS[kind].get(lang) if kind in EVENTS else kind


def clock(name: str, lang: str) -> str:
    kind, _, n = name.partition(":")
    if kind == "continuity" and n.isdigit():
        try:
            return ContinuityPhase(int(n)).text.get(lang)
        except ValueError:
            return name
    if kind == "response":
        return f"{t('clock_response', lang)} ({n})" if n and n != "1" else t("clock_response", lang)
    if kind == "written_reply":
        return t("clock_written_reply", lang)
    return name
