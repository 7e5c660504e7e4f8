"""`hisguard-agent doctor -c CONFIG`: is this agent able to work here? Each finding says what to fix.

Checks, in order: the configuration; the state directory is writable; ICMP (raw sockets, or
unprivileged datagram ICMP) as each ping job will use it; the server answers; the token is
an agent token the server knows; then every configured probe runs once — a database login
that fails, an SNMP device that does not answer, clamd not listening — and its error is shown.
Exit status 0 when nothing failed, 1 otherwise, 2 for a broken configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import httpx

from hisguard import __version__
from hisguard.bilingual import CONFIG_ERROR, both, language
from hisguard.plan import Text
from hisguard.report import API_PREFIX

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Finding:
    status: str
    what: Text
    fix: Text | None = None


# What to try when a probe of this type cannot observe (its own error message comes first).
PROBE_FIX: dict[str, Text] = {
    "database": Text(
        "检查数据库地址、端口、登录名和密码，以及数据库是否允许本机连接"
        "（防火墙、pg_hba.conf、SQL Server 身份验证模式）",
        "check the database address, port, login and password, and that it accepts this host "
        "(firewall, pg_hba.conf, SQL Server authentication mode)",
    ),
    "snmp": Text(
        "检查设备地址、团体名或 SNMPv3 用户/密码，以及设备的 SNMP 访问控制是否允许本机地址",
        "check the device address, community or SNMPv3 user and keys, and the device's SNMP ACL for this host",
    ),
    "antivirus": Text(
        "检查杀毒软件服务是否运行（clamd 的套接字/端口、Defender 服务），以及本用户能否读取其日志",
        "check the antivirus service is running (clamd socket/port, Defender) and its logs are readable by this user",
    ),
    "service": Text(
        "检查目标地址与端口、本机到目标的防火墙，以及 ca_file / auth_file 等文件本用户能否读取",
        "check the target's address and port, the firewall between this host and it, and that files such as "
        "ca_file / auth_file are readable by this user",
    ),
    "winevent": Text(
        "在 Windows 上以管理员或 Event Log Readers 组成员运行代理",
        "run the agent on Windows as Administrator or a member of Event Log Readers",
    ),
}
GENERIC_FIX = Text("按上面的错误检查该探针的配置", "check this probe's settings against the error above")
# A service target that does not answer: what to look at first, by outcome.
SERVICE_FIX: dict[str, Text] = {
    "refused": Text(
        "目标端口无服务监听：检查服务进程是否在运行、端口是否正确，或防火墙是否拒绝本机",
        "nothing listens on that port: check the service runs, the port is right, or a firewall rejects this host",
    ),
    "unreachable": Text(
        "网络不可达或名称无法解析：检查路由、交换机与 DNS",
        "no route or the name does not resolve: check routing, switches and DNS",
    ),
    "timeout": Text(
        "连接后无应答：服务可能挂起（进程在、端口开、不应答），或防火墙丢弃了数据包",
        "no answer in time: the service may be hung (process alive, port open, silent), or a firewall drops packets",
    ),
    "wrong_answer": Text(
        "服务应答了但不符合预期：核对 status/body/expect 设置与服务日志",
        "the service answered, but not as expected: compare status/body/expect with the service's own log",
    ),
    "not_checked": Text("按上面的错误修复本机的文件或安装", "fix this host's file or installation as the error says"),
}


def _raw_icmp() -> str | None:
    """None if a raw ICMP socket opens, else why not."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _dgram_icmp() -> str | None:
    """None if an unprivileged (datagram) ICMP socket opens, else why not (Linux ping_group_range)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _would_be_privileged(choice: str) -> bool:
    # Mirrors checks/ping.py: "auto" means raw sockets only for root/Administrator.
    if choice != "auto":
        return choice == "yes"
    return sys.platform == "win32" or os.geteuid() == 0


RAW_FIX = Text(
    "以 root 运行，或用 `hisguard-agent service install` 安装为服务（授予 CAP_NET_RAW），"
    "或执行 `setcap cap_net_raw+ep <python>`",
    "run as root, or install the service with `hisguard-agent service install` (it grants CAP_NET_RAW), "
    "or `setcap cap_net_raw+ep <python>`",
)
DGRAM_FIX = Text(
    '允许非特权 ICMP：sysctl -w net.ipv4.ping_group_range="0 2147483647"（写入 /etc/sysctl.d/ 永久生效），'
    '或在 ping 探针中设 privileged = "yes" 并授予 CAP_NET_RAW',
    'allow unprivileged ICMP: sysctl -w net.ipv4.ping_group_range="0 2147483647" (persist in /etc/sysctl.d/), '
    'or set privileged = "yes" in the ping probe and grant CAP_NET_RAW',
)


def check_icmp(cfg: Any) -> list[Finding]:
    jobs = [j for j in cfg.jobs if j.spec.name == "ping"]
    if not jobs:
        return []
    raw, dgram = _raw_icmp(), _dgram_icmp()
    out = []
    for job in jobs:
        if _would_be_privileged(job.config.privileged):
            if raw is None:
                out.append(Finding(OK, Text(f"{job.name}：可发送原始 ICMP", f"{job.name}: raw ICMP sockets work")))
            else:
                out.append(
                    Finding(
                        FAIL,
                        Text(
                            f"{job.name}：不能打开原始 ICMP 套接字（{raw}）", f"{job.name}: no raw ICMP socket ({raw})"
                        ),
                        RAW_FIX,
                    )
                )
        elif dgram is None:
            out.append(Finding(OK, Text(f"{job.name}：可发送非特权 ICMP", f"{job.name}: unprivileged ICMP works")))
        else:
            fix = DGRAM_FIX
            if raw is None:
                fix = Text(
                    '本进程可用原始 ICMP：在 ping 探针中设 privileged = "yes"',
                    'raw ICMP works for this process: set privileged = "yes" in the ping probe',
                )
            out.append(
                Finding(
                    FAIL,
                    Text(
                        f"{job.name}：不能打开非特权 ICMP 套接字（{dgram}）",
                        f"{job.name}: no unprivileged ICMP socket ({dgram})",
                    ),
                    fix,
                )
            )
    return out


def check_state_dir(cfg: Any) -> Finding:
    d = cfg.agent.state_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-"):
            pass
        return Finding(OK, Text(f"状态目录可写：{d}", f"state directory is writable: {d}"))
    except OSError as exc:
        return Finding(
            FAIL,
            Text(f"状态目录不可写：{d}（{exc.strerror}）", f"state directory not writable: {d} ({exc.strerror})"),
            Text(f"把 {d} 的属主改为运行代理的用户，或修改 [agent] state_dir", f"chown {d} to the agent's user, or "
                 "change [agent] state_dir"),
        )  # fmt: skip


def check_server(cfg: Any) -> list[Finding]:
    url = cfg.server.url.rstrip("/")
    verify: Any = str(cfg.server.ca_bundle) if cfg.server.ca_bundle else True
    try:
        token = cfg.token
    except Exception as exc:  # ConfigError: token file unreadable, env var unset
        return [Finding(FAIL, Text(f"无法读取令牌：{exc}", f"cannot read the token: {exc}"), TOKEN_FIX)]
    try:
        with httpx.Client(timeout=cfg.server.timeout, verify=verify) as client:
            r = client.get(f"{url}/healthz")
            if r.status_code != 200:
                return [
                    Finding(
                        FAIL,
                        Text(f"服务器 {url} 应答 HTTP {r.status_code}", f"server {url} answered HTTP {r.status_code}"),
                        Text(
                            "检查 [server] url 是否指向 hisguard 服务器",
                            "check that [server] url is the hisguard server",
                        ),
                    )
                ]
            found = [Finding(OK, Text(f"服务器可达：{url}", f"server reachable: {url}"))]
            # An empty batch: the server checks the token first (401/403), then refuses the empty list (422).
            r = client.post(
                f"{url}{API_PREFIX}/reports",
                json={"agent": cfg.agent.name, "version": __version__, "items": []},
                headers={"Authorization": f"Bearer {token}"},
            )
    except httpx.HTTPError as exc:
        return [
            Finding(
                FAIL,
                Text(f"无法连接服务器 {url}：{exc}", f"cannot reach the server {url}: {exc}"),
                Text(
                    "检查网络、防火墙（服务器端口）、DNS，以及服务器是否在运行；https 时检查 ca_bundle",
                    "check the network, firewall (the server's port), DNS and that the server runs; for https "
                    "check ca_bundle",
                ),
            )
        ]
    if r.status_code == 422:
        found.append(Finding(OK, Text("令牌有效（代理令牌）", "token accepted (agent token)")))
    elif r.status_code == 401:
        found.append(
            Finding(FAIL, Text("服务器不认识此令牌或已吊销", "the server does not know this token"), TOKEN_FIX)
        )
    elif r.status_code == 403:
        found.append(Finding(FAIL, Text("此令牌不是代理令牌", "this token is not an agent token"), TOKEN_FIX))
    else:
        found.append(
            Finding(WARN, Text(f"令牌检查得到 HTTP {r.status_code}", f"token check answered HTTP {r.status_code}"))
        )
    return found


TOKEN_FIX = Text(
    "在服务器上执行 `hisguard-server token create --agent 代理名 --site 医院` 并把令牌写入 token_file",
    "on the server run `hisguard-server token create --agent NAME --site SITE` and put the token in token_file",
)


def service_findings(job_name: str, obs: list[Any]) -> list[Finding]:
    """One finding for each service target that did not answer as it should (the agent itself may be fine)."""
    from hisguard.checks.service.result import summary

    out = []
    for o in obs:
        if o.check != "service.answer" or o.ok is True:
            continue
        said, numbers = summary(o.detail)
        out.append(
            Finding(
                WARN,
                Text(
                    f"服务 {o.label}（{o.subject}，探针 {job_name}）：{said.zh} {numbers}",
                    f"service {o.label} ({o.subject}, probe {job_name}): {said.en} {numbers}",
                ),
                SERVICE_FIX.get(str(o.detail.get("outcome")), GENERIC_FIX),
            )
        )
    return out


async def check_probes(cfg: Any) -> list[Finding]:
    from hisguard.checks.base import ProbeContext, ProbeError

    async def one(job: Any) -> list[Finding]:
        ctx = ProbeContext(host=cfg.agent.name, state_dir=cfg.agent.state_dir)
        try:
            obs = await asyncio.wait_for(job.spec.run(job.config, ctx), job.config.timeout)
        except asyncio.TimeoutError:
            error = f"timed out after {job.config.timeout:g}s"
        except ProbeError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        else:
            if job.spec.name == "ping":
                return ping_findings(job.name, obs)
            bad = sum(1 for o in obs if o.ok is False)
            note = Text(f"，其中 {bad} 项异常", f", {bad} failing") if bad else Text("", "")
            ran = Finding(
                OK,
                Text(
                    f"探针 {job.name}：{len(obs)} 项观测{note.zh}",
                    f"probe {job.name}: {len(obs)} observations{note.en}",
                ),
            )
            extra = PROBE_FINDINGS.get(job.spec.name)
            return [ran, *(extra(job.name, obs) if extra else [])]
        return [
            Finding(
                FAIL,
                Text(f"探针 {job.name} 无法观测：{error}", f"probe {job.name} cannot observe: {error}"),
                PROBE_FIX.get(job.spec.name, GENERIC_FIX),
            )
        ]

    return [f for found in await asyncio.gather(*(one(job) for job in cfg.jobs)) for f in found]


ASPECT_WORDS = {
    "interfaces": ("端口", "interfaces"),
    "restarts": ("重启", "restarts"),
    "cpu": ("CPU", "cpu"),
    "memory": ("内存", "memory"),
    "temperature": ("温度", "temperature"),
    "hardware": ("风扇/电源/板卡", "fans/power/modules"),
    "on_battery": ("电池供电", "on battery"),
    "runtime": ("剩余时间", "runtime"),
    "charge": ("电量", "charge"),
    "bypass": ("旁路", "bypass"),
    "alarms": ("告警", "alarms"),
    "battery": ("电池状态", "battery"),
}


def snmp_findings(job: str, obs: list[Any]) -> list[Finding]:
    """Per SNMP device: what cannot be read, and what is read and from where (nothing silently unmonitored)."""
    out = []
    for o in obs:
        if o.check == "snmp.error":
            error = o.detail.get("error")
            out.append(Finding(FAIL, Text(f"{job}：{error}", f"{job}: {error}"), PROBE_FIX["snmp"]))
        elif o.check == "snmp.coverage":
            read = o.detail.get("read", {})
            missing = o.detail.get("not_provided", [])
            zh = "；".join(f"{ASPECT_WORDS.get(a, (a, a))[0]}：{src}" for a, src in read.items()) or "无"
            en = "; ".join(f"{ASPECT_WORDS.get(a, (a, a))[1]}: {src}" for a, src in read.items()) or "nothing"
            if missing:
                zh += "。本设备未提供：" + "、".join(ASPECT_WORDS.get(a, (a, a))[0] for a in missing)
                en += ". Not provided by this device: " + ", ".join(ASPECT_WORDS.get(a, (a, a))[1] for a in missing)
            out.append(Finding(WARN if missing else OK, Text(f"{o.subject} 读取 — {zh}", f"{o.subject} reads — {en}")))
    return out


PING_FIX = {
    "unsendable": Text(
        "本机发不出去：检查本机网卡是否连通、到该目标的路由（ip link / ip route，Windows：ipconfig / route print）"
        "以及本机防火墙的出站规则",
        "this host cannot send there: check its interface is up, its route to the target (ip link / ip route; "
        "Windows: ipconfig / route print) and its outbound firewall rules",
    ),
    "refused": Text(
        "目标或途中的设备以 ICMP 差错拒绝：确认目标在线，并在其防火墙/ACL 中允许来自本机的 ICMP 回显请求",
        "the target or a device on the way refuses with an ICMP error: check it is up and that its firewall/ACL "
        "allows ICMP echo from this host",
    ),
    "lost": Text(
        "请求发出但无应答：确认目标在线、地址正确，且防火墙未丢弃 ICMP",
        "requests left but drew no answer: check the target is up, the address is right and no firewall drops ICMP",
    ),
}
MAX_PING_LINES = 20


def ping_findings(job: str, obs: list[Any]) -> list[Finding]:
    """Each target's outcome: nothing sendable anywhere fails the whole job (this host's network)."""
    from hisguard.checks.ping import describe

    targets = [o for o in obs if o.check == "ping.reachable"]
    own = next((o for o in obs if o.check == "ping.agent_network"), None)
    counts: dict[str, int] = {}
    for o in targets:
        counts[o.detail.get("outcome", "?")] = counts.get(o.detail.get("outcome", "?"), 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    if own is not None and own.ok is False:
        return [
            Finding(
                FAIL,
                Text(
                    f"探针 {job}：{len(targets)} 个目标全部无法发送，本机网络故障（{own.label}）",
                    f"probe {job}: nothing could be sent to any of {len(targets)} targets — this host's network "
                    f"is failing ({own.label}; route: {own.detail.get('route')})",
                ),
                PING_FIX["unsendable"],
            )
        ]
    found = [
        Finding(
            OK, Text(f"探针 {job}：{len(targets)} 个目标：{tally}", f"probe {job}: {len(targets)} targets: {tally}")
        )
    ]
    unanswered = [o for o in targets if o.detail.get("outcome") != "answered" or o.ok is False]
    for o in unanswered[:MAX_PING_LINES]:
        outcome = o.detail.get("outcome", "lost")
        line = f"{job} {o.label}: {describe(o)}"
        found.append(Finding(FAIL if outcome == "unsendable" else WARN, Text(line, line), PING_FIX.get(outcome)))
    if len(unanswered) > MAX_PING_LINES:
        more = len(unanswered) - MAX_PING_LINES
        found.append(Finding(WARN, Text(f"{job}：另有 {more} 个目标无应答", f"{job}: {more} more targets unanswered")))
    return found
BASELINE_FIX = Text(
    "记录表结构基线：hisguard-agent baseline -c 配置文件（没有基线就发现不了删表、删列）",
    "record the schema baseline: hisguard-agent baseline -c CONFIG (without it dropped tables and columns go unseen)",
)
DB_NAME_FIX = Text(
    "核对 [[probe.database]] 的 databases 拼写，或在服务器上查看实际的数据库名",
    "check the spelling in [[probe.database]] databases against the names on the server",
)
DB_GRANT_FIX = Text(
    "给探针登录授予该库的只读权限（见 docs/database.md 的最小权限）",
    "grant the probe's login read access to it (minimum permissions in docs/database.md)",
)


def database_findings(job: str, obs: list[Any]) -> list[Finding]:
    """What a database round could not see: databases missing or hidden, no baseline, rules that cannot run."""
    databases = {
        "NOT_FOUND": (
            "{job}：配置的数据库 {name} 在服务器上不存在（拼写错误？）",
            "{job}: database {name} listed in the configuration does not exist on the server (a typo?)",
            DB_NAME_FIX,
        ),
        "NOT_VISIBLE": (
            "{job}：数据库 {name} 对探针登录不可见",
            "{job}: database {name} is not visible to the probe's login",
            DB_GRANT_FIX,
        ),
    }
    out = []
    for o in obs:
        state = o.detail.get("state")
        if o.check == "db.state" and state in databases:
            zh, en, fix = databases[state]
            name = o.subject.rsplit("/", 1)[-1]
            out.append(Finding(FAIL, Text(zh.format(job=job, name=name), en.format(job=job, name=name)), fix))
        elif o.check == "db.baseline":
            out.append(Finding(FAIL, Text(f"{job}：尚无表结构基线", f"{job}: no schema baseline yet"), BASELINE_FIX))
        elif "unverified_since" in o.detail:
            out.append(Finding(WARN, Text(f"{job}：{o.label}", f"{job}: {o.label}")))
        elif o.check == "db.statistics":
            out.append(Finding(WARN, Text(f"{job}：{o.label}", f"{job}: {o.label}")))
        elif o.check == "db.read":
            for text in o.detail.get("blind_spots", []):
                zh, _, en = text.partition(" / ")
                out.append(Finding(WARN, Text(f"{job} 看不到：{zh}", f"{job} cannot see: {en or zh}")))
    return out


# What each probe's own round adds to doctor's findings (per target, per device, per database).
PROBE_FINDINGS = {"service": service_findings, "snmp": snmp_findings, "database": database_findings}


def diagnose(cfg: Any, probes: bool = True) -> list[Finding]:
    findings = [check_state_dir(cfg), *check_icmp(cfg), *check_server(cfg)]
    if probes:
        findings += asyncio.run(check_probes(cfg))
    return findings


def report(findings: list[Finding], out: Any = None) -> int:
    out = out or sys.stdout
    lang = language()
    for f in findings:
        lines = [f.what.zh, f.what.en] if lang == "both" and f.what.zh != f.what.en else [f.what.get(lang)]
        if f.fix and f.status != OK:
            fix = {"zh": f"修复：{f.fix.zh}", "en": f"fix:  {f.fix.en}"}
            lines += [fix["zh"], fix["en"]] if lang == "both" else [fix[lang]]
        print(f"[{f.status:^4}] " + "\n       ".join(lines), file=out)
    failed = sum(1 for f in findings if f.status == FAIL)
    summary = Text(f"有 {failed} 项需要修复", f"{failed} problem(s) to fix") if failed else Text("全部正常", "all good")
    print(f"\n{both(summary)}", file=out)
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from hisguard.agent.config import load_config
    from hisguard.tomlconfig import ConfigError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"[FAIL] {both(CONFIG_ERROR)}:\n{exc}")
        return 2
    said = Text("检查 {path}（代理 {agent}）", "checking {path} (agent {agent})")
    print(f"hisguard-agent {__version__} doctor: {both(said, path=cfg.path, agent=cfg.agent.name)}\n")
    config_warnings = [Finding(WARN, Text(w, w)) for w in cfg.warnings]  # already in both languages
    return report([*config_warnings, *diagnose(cfg, probes=not args.no_probes)])
