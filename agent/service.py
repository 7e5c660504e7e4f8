"""Run hisguard as a proper service: a hardened systemd unit on Linux, a Windows service elsewhere.

    hisguard-agent service install -c /etc/hisguard/agent.toml   (as root / Administrator)
    hisguard-agent service status
    hisguard-agent service uninstall

Linux: a system user (default `hisguard`) runs the agent with only CAP_NET_RAW (raw ICMP), the
file system read-only except its state directory, restarted on failure; logs go to journald
(`journalctl -u hisguard-agent`). Windows: pywin32's service framework (agent/winservice.py),
automatic start, restarted by the service manager on failure, start/stop in the Application
event log and the agent's log in rotating files under its state directory.

`render_unit` is shared with the server's unit (server/service.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hisguard.bilingual import CONFIG_ERROR, fail
from hisguard.plan import Text

UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "hisguard"

# Hardening every hisguard unit gets (systemd.exec(5)); a unit adds its capabilities and paths.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "UMask=0027",
)


@dataclass
class UnitSpec:
    name: str  # hisguard-agent / hisguard-server
    description: str
    exec_start: list[str]
    user: str = DEFAULT_USER
    group: str | None = None  # default: the user's primary group (useradd --user-group makes one)
    capabilities: tuple[str, ...] = ()
    read_write: list[Path] = field(default_factory=list)
    read_only_home: bool = False  # the program or its config lives under /home or /root
    environment: dict[str, str] = field(default_factory=dict)
    private_tmp: bool = True  # off when the service's own files live under /tmp (see under_tmp)
    warnings: list[Text] = field(default_factory=list)  # said before the unit is written


def _quote(arg: str) -> str:
    # systemd splits ExecStart like a shell (without expansion); quote what has spaces or quotes.
    if arg and not any(c in arg for c in " \t\"'\\;$%"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def render_unit(spec: UnitSpec) -> str:
    caps = " ".join(spec.capabilities)
    lines = [
        "[Unit]",
        f"Description={spec.description}",
        "Documentation=file:///usr/share/doc/hisguard/README.md",
        "After=network-online.target",
        "Wants=network-online.target",
        # Never give up restarting: a monitoring agent that stays down is worse than one that flaps.
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"User={spec.user}",
        f"Group={spec.group or primary_group(spec.user)}",
        "ExecStart=" + " ".join(_quote(a) for a in spec.exec_start),
        "Restart=on-failure",
        "RestartSec=5s",
        f"StateDirectory={spec.name}",
        "StateDirectoryMode=0750",
        f"SyslogIdentifier={spec.name}",
        f"AmbientCapabilities={caps}",
        f"CapabilityBoundingSet={caps}",
        "ProtectHome=" + ("read-only" if spec.read_only_home else "yes"),
        *(h if spec.private_tmp or h != "PrivateTmp=yes" else "PrivateTmp=no" for h in HARDENING),
    ]
    lines += [f"ReadWritePaths={_quote(str(p))}" for p in spec.read_write]
    lines += [f"Environment={_quote(f'{k}={v}')}" for k, v in sorted(spec.environment.items())]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def primary_group(user: str) -> str:
    import grp
    import pwd

    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return user  # created with its own group at install


def under_home(*paths: Path) -> bool:
    return any(str(p).startswith(("/home/", "/root/")) for p in paths)


TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))  # what PrivateTmp= replaces with the unit's own empty folders
TMP_WARNING = Text(
    "以下文件或目录位于 /tmp 或 /var/tmp：{paths}。服务若使用私有 /tmp（PrivateTmp）将看不到它们，"
    "因此本单元设为 PrivateTmp=no；/tmp 可能在重启时被清空，请把配置移到 /etc/hisguard/、状态目录移到 /var/lib/。",
    "under /tmp or /var/tmp: {paths}. A service with its own private /tmp (PrivateTmp) would not see them, so "
    "this unit sets PrivateTmp=no; /tmp may be emptied at boot: move the configuration to /etc/hisguard/ and the "
    "state to /var/lib/.",
)


def under_tmp(*paths: Path) -> list[Path]:
    """The paths a unit with PrivateTmp=yes would not see (its /tmp and /var/tmp are private and empty)."""
    return [p for p in paths if any(p == d or d in p.parents for d in TMP_DIRS)]


def tmp_settings(*paths: Path) -> dict[str, Any]:
    """UnitSpec fields for a service whose files may lie under /tmp: PrivateTmp off, and a warning."""
    found = under_tmp(*paths)
    if not found:
        return {}
    return {"private_tmp": False, "warnings": [TMP_WARNING.format(paths=", ".join(str(p) for p in found))]}


def agent_unit(config: Path, user: str = DEFAULT_USER) -> UnitSpec:
    """The agent's unit for `config`; its state directory is made writable (the rest is read-only)."""
    from hisguard.agent.config import load_config

    cfg = load_config(config)
    config = config.resolve()
    exe = Path(sys.executable)
    return UnitSpec(
        name="hisguard-agent",
        description="hisguard agent: HIS monitoring and emergency-plan triggers (hisguard 监测代理)",
        exec_start=[str(exe), "-m", "hisguard.agent.cli", "run", "-c", str(config)],
        user=user,
        capabilities=("CAP_NET_RAW",),
        read_write=[cfg.agent.state_dir],
        read_only_home=under_home(exe, config, cfg.agent.state_dir),
        **tmp_settings(config, *cfg.paths()),
    )


# ---------------------------------------------------------------------------------------------
# The system commands, in one place.
def useradd_command(user: str) -> list[str]:
    return ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
            "--user-group", user]  # fmt: skip


def systemctl(*args: str) -> list[str]:
    return ["systemctl", *args]


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def _run(cmd: list[str], dry_run: bool) -> int:
    print("  $ " + " ".join(cmd))
    if dry_run:
        return 0
    return subprocess.run(cmd, check=False).returncode


def _user_exists(user: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def install_unit(spec: UnitSpec, unit_dir: Path, start: bool, dry_run: bool = False) -> int:
    """Write the unit, create the user and writable paths, enable and start it. Returns an exit code."""
    path = unit_dir / f"{spec.name}.service"
    text = render_unit(spec)
    if not dry_run and os.geteuid() != 0 and unit_dir == UNIT_DIR:
        print("需要 root 权限 / run as root (sudo) to install a system service", file=sys.stderr)
        return 1
    if not _user_exists(spec.user) and _run(useradd_command(spec.user), dry_run) != 0:
        print(f"无法创建用户 / could not create user {spec.user}", file=sys.stderr)
        return 1
    if not dry_run:
        for p in spec.read_write:
            p.mkdir(parents=True, exist_ok=True)
            shutil.chown(p, spec.user, spec.group or primary_group(spec.user))
        unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"已写入 / wrote {path}")
    if not systemd_running():
        print("systemd 未运行，未启用服务 / systemd is not running here: unit written, not enabled")
        return 0
    rc = _run(systemctl("daemon-reload"), dry_run)
    if rc == 0 and start:
        rc = _run(systemctl("enable", "--now", f"{spec.name}.service"), dry_run)
    if rc == 0:
        print(f"日志 / logs: journalctl -u {spec.name} -f")
    return rc


def uninstall_unit(name: str, unit_dir: Path, dry_run: bool = False) -> int:
    path = unit_dir / f"{name}.service"
    if systemd_running():
        _run(systemctl("disable", "--now", f"{name}.service"), dry_run)
    if path.exists() and not dry_run:
        path.unlink()
        print(f"已删除 / removed {path}")
    elif not path.exists():
        print(f"未安装 / not installed: {path}")
    if systemd_running():
        _run(systemctl("daemon-reload"), dry_run)
    return 0


def unit_status(name: str, unit_dir: Path) -> int:
    path = unit_dir / f"{name}.service"
    if not path.exists():
        print(f"未安装 / not installed ({path} missing)")
        return 3
    if not systemd_running():
        print(f"已安装，systemd 未运行 / installed ({path}); systemd is not running here")
        return 3
    return subprocess.run(systemctl("status", "--no-pager", f"{name}.service"), check=False).returncode


# ---------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument("-c", "--config", help="configuration the service runs with (install)")
    p.add_argument("--user", default=DEFAULT_USER, help="Linux user the service runs as (created if missing)")
    p.add_argument("--unit-dir", type=Path, default=UNIT_DIR, help="where the systemd unit goes")
    p.add_argument("--no-start", action="store_true", help="install without enabling and starting")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the unit and change nothing")


def systemd_action(args: argparse.Namespace, name: str, unit: Callable[[Path, str], UnitSpec]) -> int:
    """install / uninstall / status of the systemd unit `name` (agent and server alike)."""
    if args.action == "install":
        from hisguard.tomlconfig import ConfigError

        if not args.config:
            print("install 需要 -c 配置文件 / install needs -c CONFIG", file=sys.stderr)
            return 2
        try:
            spec = unit(Path(args.config), args.user)
        except ConfigError as exc:
            fail(CONFIG_ERROR, str(exc))
            return 2
        for warning in spec.warnings:
            fail(Text(f"警告：{warning.zh}", f"warning: {warning.en}"))
        if args.print_only:
            print(render_unit(spec), end="")
            return 0
        return install_unit(spec, args.unit_dir, start=not args.no_start)
    if args.action == "uninstall":
        return uninstall_unit(name, args.unit_dir)
    return unit_status(name, args.unit_dir)


def cmd_service(args: argparse.Namespace) -> int:
    """`hisguard-agent service …`: systemd on Linux, the Windows service manager on Windows."""
    if sys.platform == "win32":
        return windows_service(args.action, args.config)
    return systemd_action(args, "hisguard-agent", agent_unit)


WINDOWS_SERVICE = "hisguard-agent"
PYWIN32_MISSING = (
    "Windows 服务需要 pywin32：pip install pywin32（离线：从 wheelhouse 安装）\n"
    "the Windows service needs pywin32: pip install pywin32 (offline: from the wheelhouse)"
)


def sc_failure_command(name: str) -> list[str]:
    """Restart after 5 s, 5 s, then 60 s; the failure count resets after a day."""
    return ["sc.exe", "failure", name, "reset=", "86400", "actions=", "restart/5000/restart/5000/restart/60000"]


def windows_service(action: str, config: str | None) -> int:
    """Install, remove or query the Windows service; pywin32 is imported only here."""
    if action == "install" and not config:
        print("install 需要 -c 配置文件 / install needs -c CONFIG", file=sys.stderr)
        return 2
    try:
        import win32service
        import win32serviceutil
    except ImportError:
        print(PYWIN32_MISSING, file=sys.stderr)
        return 2
    if action == "install":
        assert config is not None
        win32serviceutil.InstallService(
            "hisguard.agent.winservice.AgentService",
            WINDOWS_SERVICE,
            "hisguard agent (hisguard 监测代理)",
            startType=win32service.SERVICE_AUTO_START,
            description="HIS monitoring and emergency-plan triggers / 医院信息系统监测与应急预案触发",
        )
        win32serviceutil.SetServiceCustomOption(WINDOWS_SERVICE, "config", str(Path(config).resolve()))
        subprocess.run(sc_failure_command(WINDOWS_SERVICE), check=False)
        win32serviceutil.StartService(WINDOWS_SERVICE)
        print(f"已安装并启动 / installed and started: {WINDOWS_SERVICE}")
        return 0
    if action == "uninstall":
        try:
            win32serviceutil.StopService(WINDOWS_SERVICE)
        except Exception:  # not running is fine
            pass
        win32serviceutil.RemoveService(WINDOWS_SERVICE)
        print(f"已删除 / removed: {WINDOWS_SERVICE}")
        return 0
    states = {1: "stopped", 2: "start pending", 3: "stop pending", 4: "running", 7: "paused"}
    try:
        state = win32serviceutil.QueryServiceStatus(WINDOWS_SERVICE)[1]
    except Exception:
        print(f"未安装 / not installed: {WINDOWS_SERVICE}")
        return 3
    print(f"{WINDOWS_SERVICE}: {states.get(state, state)}")
    return 0 if state == 4 else 3
