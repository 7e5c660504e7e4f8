"""hisguard-agent: run, once, check-config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hisguard import __version__
from hisguard.agent.memory import skip_pydantic_plugins
from hisguard.agent.service import add_arguments as service_arguments
from hisguard.bilingual import CONFIG_ERROR, WARNINGS, both, compact, fail, heading, pad, say
from hisguard.plan import Text, Trigger
from hisguard.tomlconfig import ConfigError

if TYPE_CHECKING:
    from hisguard.agent.config import AgentConfig
    from hisguard.checks.base import Observation

EXIT_CONFIG = 2


def _load(path: str, check_token: bool = False) -> AgentConfig:
    """The configuration, or every problem with it on stderr and exit 2."""
    from hisguard.agent.config import load_config  # after skip_pydantic_plugins() (main)

    try:
        return load_config(path, check_token=check_token)
    except ConfigError as exc:
        fail(CONFIG_ERROR, str(exc))
        raise SystemExit(EXIT_CONFIG) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config, check_token=True)
    said = Text(
        "配置正确 — 代理 {agent}，服务器 {url}，{n} 个探测任务",
        "OK — agent {agent}, server {url}, {n} probe jobs",
    )
    say(said, agent=cfg.agent.name, url=cfg.server.url, n=len(cfg.jobs))
    print(f"  {cfg.path}")
    every = Text("每 {interval:g} 秒，超时 {timeout:g} 秒", "every {interval:g}s, timeout {timeout:g}s")
    for job in cfg.jobs:
        when = both(every, interval=job.config.interval, timeout=job.config.timeout).replace("\n", " / ")
        print(f"  {job.name:<16} {job.spec.name:<10} {when}")
    if cfg.warnings:
        print(heading(WARNINGS))
        print("\n".join(f"  {w}" for w in cfg.warnings))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hisguard.agent.memory import limit_arenas
    from hisguard.agent.runtime import Agent

    cfg = _load(args.config, check_token=True)
    _logging(cfg.agent.log_level)
    for warning in cfg.warnings:
        logging.getLogger("hisguard.agent").warning("%s", warning)
    limit_arenas()  # before the first worker thread
    agent = Agent(cfg)
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        pass
    return 0


_pad = pad  # left-justify to terminal columns, CJK counted as two (hisguard.bilingual)

# `once`: the table's headings and states, the sections' headings.
COLUMNS = (
    Text("任务", "job"),
    Text("检查", "check"),
    Text("对象", "subject"),
    Text("状态", "state"),
    Text("值", "value"),
)
STATE = {None: Text("-", "-"), True: Text("正常", "ok"), False: Text("异常", "FAIL")}
PROBE_FAILED = Text("探测失败", "FAILED")
INCIDENTS = Text("事件", "incidents")
NO_INCIDENTS = Text("无事件", "no incidents")
NOT_DELIVERED = Text("未送达，已保存待重发（{n} 份待发）", "not delivered, kept for retry ({n} pending)")
DELIVERED = Text("已送达 {n} 份报告至 {url}", "delivered {n} reports to {url}")


def _fmt_value(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _said(probe: str, o: Observation) -> str:
    """The value column: a ping target's outcome (answered / lost / refused / not sendable), else the value."""
    if probe == "ping":
        from hisguard.checks.ping import describe

        return describe(o)
    return _fmt_value(o.value)


def cmd_once(args: argparse.Namespace) -> int:
    from hisguard.agent.delivery import DeliveryError, Sender
    from hisguard.agent.runtime import Agent

    cfg = _load(args.config)
    _logging("WARNING")
    agent = Agent(cfg)

    async def go() -> tuple[int, str | None]:
        await agent.once()
        try:
            token = cfg.token
        except ConfigError as exc:  # the probes still run and print; nothing can be sent
            return 0, str(exc)
        agent.sender = sender = Sender(cfg, agent.store, token)
        try:
            return await sender.flush(), None
        except DeliveryError as exc:
            return 0, str(exc)
        finally:
            await sender.aclose()

    delivered, error = asyncio.run(go())
    job_h, check_h, subject_h, state_h, value_h = (compact(t) for t in COLUMNS)
    print(f"{_pad(job_h, 14)} {_pad(check_h, 18)} {_pad(subject_h, 28)} {_pad(state_h, 10)} {value_h}")
    for job in cfg.jobs:
        st = agent.status[job.name]
        if not st.ok:
            print(f"{job.name:<14} {'(probe)':<18} {'':<28} {_pad(compact(PROBE_FAILED), 10)} {st.error}")
            continue
        for o in agent.latest[job.name]:
            unverified = "unverified_since" in o.detail
            state = "UNKNOWN" if unverified else compact(STATE[o.ok])
            print(f"{job.name:<14} {o.check:<18} {_pad(o.label, 28)} {_pad(state, 10)} {_said(job.spec.name, o)}")
            if unverified or o.check == "db.statistics":  # the whole sentence: what, since when, why
                print(f"{'':<14} {'':<18} {o.label}")
    services = [o for job in cfg.jobs for o in agent.latest[job.name] if o.check == "service.answer"]
    if services:  # each target: what it came to, with the numbers
        from hisguard.checks.service.result import summary

        print()
        print("服务 / services:")
        for o in services:
            said, numbers = summary(o.detail)
            print(f"  {_pad(o.label, 24)} {_pad(o.subject, 44)} {said.zh} {said.en}  {numbers}")
    incidents = agent.current_incidents()
    errors = [o for job in cfg.jobs for o in agent.latest[job.name] if o.check == "snmp.error"]
    for o in errors:  # devices the SNMP probe could not read, by name
        print(f"  探测错误 / probe error: {o.detail.get('error')}")
    for o in (o for job in cfg.jobs for o in agent.latest[job.name] if o.check == "snmp.coverage"):
        read = ", ".join(f"{aspect} ({source})" for aspect, source in o.detail.get("read", {}).items()) or "-"
        missing = ", ".join(o.detail.get("not_provided", []))
        print(f"  {o.subject} 可读 / reads: {read}" + (f"; 本设备未提供 / not provided by this device: {missing}"
                                                      if missing else ""))  # fmt: skip
    observed = [o for job in cfg.jobs for o in agent.latest[job.name]]
    for o in [o for o in observed if o.check == "db.read"]:  # what the database login cannot see, and the grant
        for text in o.detail.get("blind_spots", []):
            print(f"  {o.label} 看不到 / cannot see: {text}")
    if cfg.topology is not None:
        from hisguard.agent.topology import report

        print()
        print("\n".join(report(cfg.topology, incidents)))
    print()
    if incidents:
        print(f"{both(INCIDENTS)} ({len(incidents)}):")
        for inc in incidents:
            t = Trigger(inc.trigger)
            print(
                f"  [{inc.severity.text.zh}/{inc.severity.value}] 触发条件 {int(t)} {t.short.zh} / trigger {int(t)} "
                f"{t.short.en} — {inc.scope.text.zh}/{inc.scope.value}"
                + (f" — {', '.join(inc.departments)}" if inc.departments else "")
            )
            print(f"      {inc.title.zh}")
            print(f"      {inc.title.en}")
    else:
        say(NO_INCIDENTS)
    print()
    if error:
        say(NOT_DELIVERED, error, n=agent.store.backlog())
    else:
        say(DELIVERED, n=delivered, url=cfg.server.url)
    agent.store.close()
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from hisguard.checks.database.rebaseline import run_accept, run_command

    cfg = _load(args.config)
    _logging(cfg.agent.log_level)
    jobs = [(j.name, j.config) for j in cfg.jobs if j.spec.name == "database" and args.job in (None, j.name)]
    if args.accept_rows:
        return run_accept(jobs, cfg.agent.state_dir, args.accept_rows, args.reason)
    return run_command(jobs, cfg.agent.state_dir, args.reason)


def cmd_service(args: argparse.Namespace) -> int:
    from hisguard.agent.service import cmd_service as run

    return run(args)


def cmd_drill(args: argparse.Namespace) -> int:
    from hisguard.agent.drill import run

    cfg = _load(args.config, check_token=True)
    return run(cfg, args.trigger, args.scope, args.end, args.by)


def cmd_doctor(args: argparse.Namespace) -> int:
    from hisguard.agent.doctor import cmd_doctor as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hisguard-agent", description="hisguard agent: probes, classifies, reports")
    parser.add_argument("--version", action="version", version=f"hisguard-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("run", cmd_run, "run the probes on their schedules and deliver to the server"),
        ("once", cmd_once, "run every probe once, print results and incidents, deliver, exit"),
        ("check-config", cmd_check_config, "validate the configuration and exit (2 if broken)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", required=True, help="agent configuration (TOML)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("baseline", help="record the HIS database schema baseline (re-run after a planned upgrade)")
    p.add_argument("-c", "--config", required=True, help="agent configuration (TOML)")
    p.add_argument("--job", help="only this database job (default: every [[probe.database]] job)")
    p.add_argument("--reason", help="why the baseline is (re-)recorded, for the log (e.g. 'HIS upgrade 5.2')")
    p.add_argument(
        "--accept-rows",
        metavar="SUBSYSTEM",
        help="accept the subsystem's current row counts as its new level (a planned archive); needs --reason",
    )
    p.set_defaults(fn=cmd_baseline)
    p = sub.add_parser("service", help="install, remove or query the system service (systemd unit / Windows service)")
    service_arguments(p)
    p.set_defaults(fn=cmd_service)
    p = sub.add_parser("drill", help="send a simulated incident (drill, 2.8) through the real delivery path")
    p.add_argument("-c", "--config", required=True, help="agent configuration (TOML)")
    p.add_argument("--trigger", required=True, type=int, choices=range(1, 7), help="plan trigger 1-6")
    p.add_argument("--scope", choices=["hospital", "department", "host"], default="hospital")
    p.add_argument("--end", action="store_true", help="report the simulated fault recovered")
    p.add_argument("--by", default="agent", help="who runs the drill (for the record)")
    p.set_defaults(fn=cmd_drill)
    p = sub.add_parser("doctor", help="check ICMP privilege, server and token, each probe once; print what to fix")
    p.add_argument("-c", "--config", required=True, help="agent configuration (TOML)")
    p.add_argument("--no-probes", action="store_true", help="skip running every probe once")
    p.set_defaults(fn=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    skip_pydantic_plugins()  # before the configuration's models are built
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
