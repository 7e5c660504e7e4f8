"""The agent as a Windows service (pywin32's service framework).

Installed by `hisguard-agent service install -c CONFIG` (agent/service.py). The module imports
anywhere; the service class exists only where pywin32 does. The agent's own log goes to
rotating files in its state directory (logs/agent.log); start, stop and a crash go to the
Application event log through the service manager.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import threading
from pathlib import Path
from typing import Any

from hisguard.agent.service import WINDOWS_SERVICE

try:
    import servicemanager
    import win32service
    import win32serviceutil

    HAVE_PYWIN32 = True
except ImportError:
    HAVE_PYWIN32 = False

LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


def file_logging(state_dir: Path, level: str) -> logging.Handler:
    """Rotating log files under the state directory (Windows has no journald)."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "agent.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    return handler


class AgentRunner:
    """The agent on its own event loop, stoppable from another thread (the service manager's)."""

    def __init__(self, config: str | Path) -> None:
        self.config = Path(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self.started = threading.Event()

    def run(self) -> None:
        from hisguard.agent.memory import skip_pydantic_plugins

        skip_pydantic_plugins()  # before the configuration's models are built
        from hisguard.agent.config import load_config
        from hisguard.agent.runtime import Agent

        cfg = load_config(self.config)
        handler = file_logging(cfg.agent.state_dir, cfg.agent.log_level)
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(Agent(cfg).run())
            if self._stopping.is_set():  # stop asked before the loop existed
                self._task.cancel()
            self.started.set()
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
        finally:
            loop.close()
            logging.getLogger().removeHandler(handler)
            handler.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)


if HAVE_PYWIN32:

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = WINDOWS_SERVICE
        _svc_display_name_ = "hisguard agent (hisguard 监测代理)"
        _svc_description_ = "HIS monitoring and emergency-plan triggers / 医院信息系统监测与应急预案触发"

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.runner: AgentRunner | None = None

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            if self.runner is not None:
                self.runner.stop()

        def SvcDoRun(self) -> None:
            servicemanager.LogInfoMsg(f"{WINDOWS_SERVICE}: starting")
            self.runner = AgentRunner(win32serviceutil.GetServiceCustomOption(self._svc_name_, "config"))
            try:
                self.runner.run()
            except Exception as exc:
                servicemanager.LogErrorMsg(f"{WINDOWS_SERVICE}: stopped by an error: {exc!r}")
                raise  # the service manager's failure actions restart it
            servicemanager.LogInfoMsg(f"{WINDOWS_SERVICE}: stopped")
