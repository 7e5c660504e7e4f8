"""`hisguard-server service install|uninstall|status`: the server as a hardened systemd unit (Linux).

The unit runs `hisguard-server run --config FILE` as a system user (default `hisguard`) with no
capabilities at all (a port below 1024 gets CAP_NET_BIND_SERVICE only), the file system
read-only except its data directory (/var/lib/hisguard-server unless the settings say otherwise),
restarted on failure; logs go to journald (`journalctl -u hisguard-server`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hisguard.agent.service import (
    UnitSpec,
    add_arguments,
    systemd_action,
    tmp_settings,
    under_home,
)

NAME = "hisguard-server"
STATE = Path("/var/lib") / NAME


def server_unit(config: Path, user: str) -> UnitSpec:
    from hisguard.server.settings import load_settings

    settings = load_settings(config)
    config = config.resolve()
    exe = Path(sys.executable)
    data_dir = settings.data_dir if "data_dir" in settings.model_fields_set else STATE
    writable = [data_dir] if data_dir != STATE else []  # StateDirectory= makes STATE writable already
    return UnitSpec(
        name=NAME,
        description="hisguard server: HIS emergency-plan incidents (hisguard 应急预案服务器)",
        exec_start=[str(exe), "-m", "hisguard.server.cli", "run", "--config", str(config)],
        user=user,
        capabilities=("CAP_NET_BIND_SERVICE",) if settings.port < 1024 else (),
        read_write=writable,
        read_only_home=under_home(exe, config, data_dir),
        environment={"HISGUARD_DATA": str(data_dir)},
        **tmp_settings(config, data_dir),
    )


def cmd_service(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        print("服务器只支持 Linux 服务 / the server runs as a Linux (systemd) service only", file=sys.stderr)
        return 2
    return systemd_action(args, NAME, server_unit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hisguard-server service", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return cmd_service(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
