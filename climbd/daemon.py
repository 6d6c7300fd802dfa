"""The daemon: a readable boot sequence around the pipeline, recorder and HTTP server.

Boot (:meth:`Daemon.start`):

1. state directory and reserve file;
2. SQLite catalog opened (WAL); sessions a crash left ``recording`` are marked
   ``interrupted`` and their video rescued;
3. pipeline threads started (capture → encode ‖ pose) and the recorder attached;
4. HTTP server listening;
5. once the camera is open (or known missing), systemd is told ``READY=1``.

Stop (:meth:`Daemon.stop`, on SIGTERM/SIGINT): a running recording is finalised (completed,
not interrupted), then the server, the pipeline and the database are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from climbd import retention
from climbd.broadcast import Broadcast
from climbd.capture import FrameSource
from climbd.config import Config, ConfigSource
from climbd.pipeline import Pipeline
from climbd.pose import Pose
from climbd.recording import Ballast, Recorder
from climbd.storage import Database
from climbd.video import EncodedPacket

__all__ = ["Daemon"]

log = logging.getLogger(__name__)


class Daemon:
    """Everything ``climbd run`` runs, on one asyncio event loop.

    Args:
        config: validated configuration.
        state_dir: where the database and session files live (created if missing).
        source_factory: capture seam for tests (fake camera); default opens
            ``config.capture.source``.
        safe_mode: why the daemon runs in safe mode (the config file was invalid): the
            HTTP API and web UI stay reachable with built-in defaults, but nothing is
            captured; health reports the reason.
    """

    def __init__(self, config: Config, state_dir: Path,
                 source_factory: Callable[[int], FrameSource] | None = None,
                 safe_mode: str | None = None):
        self.config = config
        self.safe_mode = safe_mode
        self.state_dir = state_dir
        self._source_factory = source_factory
        self.db: Database
        self.pipeline: Pipeline
        self.recorder: Recorder
        self.app: web.Application | None = None
        self.port: int | None = None
        #: where each non-default config key came from ("file"/"cli"; set by ``climbd run``)
        self.config_sources: dict[str, ConfigSource] = {}
        #: extra health entries registered by optional parts (live view, GPIO): name -> fn
        self.health_sources: dict[str, Callable[[], Any]] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self.started_at = time.monotonic()
        self.notifier: Any = None

    # -- streams for the live view ---------------------------------------------------------
    @property
    def packets(self) -> Broadcast[EncodedPacket]:
        """Encoded video packets, one encode for every consumer."""
        return self.pipeline.packets

    @property
    def poses(self) -> Broadcast[Pose]:
        """Pose results (image + world landmarks) as they come out of inference."""
        return self.pipeline.poses

    def request_keyframe(self) -> None:
        """Ask for an IDR soon (a new viewer or packet loss); callers rate-limit."""
        self.pipeline.request_keyframe()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Boot (see the module docstring).

        Raises:
            StorageError: the state directory or database cannot be used.
            OSError: the HTTP port cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ballast = Ballast(self.state_dir / "reserve.bin", self.config.storage.reserve_mb)
        ballast.ensure()
        self.db = await Database.open(self.state_dir / "climbd.db")
        self.pipeline = Pipeline(self.config, loop, self._source_factory)
        self.recorder = Recorder(
            self.db, self.state_dir, self.config.recording, self.pipeline.packets,
            self.pipeline.poses, self.pipeline.request_keyframe,
            source=self.config.capture.source, ballast=ballast)
        recovered = await self.recorder.recover()
        if recovered:
            log.warning("recovered %d interrupted session(s)", len(recovered))
        self._tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
        self._tasks.append(asyncio.create_task(retention.run(self), name="retention"))
        if self.safe_mode:
            log.error("SAFE MODE (nothing is captured): %s", self.safe_mode)
        else:
            self.pipeline.start()
            self._start_gpio()

        from climbd.api import create_app

        self.app = create_app(self)
        from climbd.security.transport import make_site, runner_options

        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     **runner_options(self.config))
        await self._runner.setup()
        site = make_site(self._runner, self.config)  # TLS if configured, connection cap
        await site.start()
        self.port = site.port
        log.info("listening on %s://%s:%s", "https" if site.tls else "http",
                 self.config.server.host, self.port)
        if not self.safe_mode:
            await asyncio.to_thread(self.pipeline.capture.opened.wait, 15.0)
        self._start_service()

    def _start_gpio(self) -> None:
        """Buttons and the recording LED, if configured; a bad chip is reported, not fatal."""
        if not self.config.gpio.enabled:
            return
        from climbd.hardware import GpioButtons

        self.gpio = GpioButtons(self.config.gpio, self)
        self._tasks.append(asyncio.create_task(self.gpio.run(), name="gpio"))
        self.health_sources["gpio"] = self.gpio.health

    def _start_service(self) -> None:
        """Tell systemd we are ready and start the watchdog/status supervisor, if present."""
        try:
            from climbd import service
        except ImportError:  # pragma: no cover - appliance layer not installed
            return
        self.notifier = service.Notifier()
        self.notifier.ready()
        interval = self.notifier.watchdog_interval() or 5.0
        self._tasks.append(asyncio.create_task(
            service.supervise(self, self.notifier, interval), name="supervisor"))

    async def stop(self) -> None:
        """Finalise a running recording, then close server, pipeline and database."""
        if self.notifier is not None:
            self.notifier.stopping()
        if self.recorder.recording:
            try:
                rec = await self.recorder.stop()
                log.info("stopped session %d on shutdown", rec.id)
            except Exception:
                log.exception("could not finalise the running recording")
        if self._runner is not None:
            await self._runner.cleanup()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.to_thread(self.pipeline.stop)
        await self.db.close()

    def request_stop(self) -> None:
        """Ask :meth:`run_forever` to return (signal handlers call this)."""
        self._stopping.set()

    async def run_forever(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping")
            await self.stop()

    # -- health ----------------------------------------------------------------------------
    def pipeline_alive(self) -> bool:
        """True while fresh frames and pose results flow (feeds the systemd watchdog)."""
        return self.pipeline.alive()

    def health(self) -> dict[str, Any]:
        """Health of every stage as a JSON-ready dict; ``status`` is ``ok`` or ``degraded``."""
        report: dict[str, Any] = self.pipeline.health()
        report["recording"] = self.recorder.status()
        try:
            usage = shutil.disk_usage(self.state_dir)
            report["storage"] = {"state_dir": str(self.state_dir), "free_bytes": usage.free,
                                 "total_bytes": usage.total}
        except OSError as exc:
            report["storage"] = {"state_dir": str(self.state_dir), "error": str(exc)}
        report["viewers"] = 0
        for name, fn in self.health_sources.items():
            try:
                report[name] = fn()
            except Exception as exc:  # a broken optional part must not break health
                report[name] = {"error": str(exc)}
        problems = []
        if report["capture"]["state"] != "running":
            problems.append(f"capture {report['capture']['state']}")
        if report["pose"]["error"]:
            problems.append("pose error")
        if report["video"]["error"]:
            problems.append("video error")
        retention = report.get("retention")
        if isinstance(retention, dict) and retention.get("state") == "critical":
            problems.append("disk below the recording floor")
        if self.safe_mode:
            problems.insert(0, f"safe mode: {self.safe_mode}")
        report["safe_mode"] = self.safe_mode
        report["status"] = "safe_mode" if self.safe_mode else "degraded" if problems else "ok"
        report["problems"] = problems
        report["uptime_s"] = round(time.monotonic() - self.started_at, 1)
        return report
