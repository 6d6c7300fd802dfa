"""The daemon: the one composition root. It builds every service, in a readable order,
hands them to the HTTP layer and owns their lifetimes.

Boot (:meth:`Daemon.start`):

1. state directory (:class:`~climbd.statedir.StateDir`) and reserve file;
2. SQLite catalog opened (WAL);
3. pipeline (capture → encode ‖ pose; threads started in step 9);
4. retention (free-space and age rules) and the recorder, whose "may I start?" preflight is
   retention's floor check; sessions a crash left ``recording`` are marked ``interrupted``
   and their video rescued;
5. export manager (queue + low-priority worker processes);
6. attempts (:class:`~climbd.attempt_service.AttemptService`: live detector on the pose
   broadcast, attempt events, hands-free recording, analysis of finished sessions); then
   ghost players (following the attempt events, for a ghost armed at lift-off) and the live
   view (WHEP endpoint; the ghost handles the data channel's ``ghost`` messages);
7. replay's media worker (thumbnails, frame tables);
8. credential store (paired devices, admin, API tokens);
9. pipeline threads and GPIO buttons (not in safe mode);
10. HTTP server (:func:`climbd.api.create_app` over :class:`~climbd.services.Services`);
11. once the camera is open (or known missing), systemd is told ``READY=1``.

Every health entry is registered here (:meth:`Daemon.add_health`) as its service is built;
no other module writes into the daemon.

Stop (:meth:`Daemon.stop`, on SIGTERM/SIGINT): a running recording is finalised (completed,
not interrupted), then the HTTP server, ghost players, live view, exports, media worker,
background tasks, pipeline and database are closed, in that order.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from climbd.attempt_service import AttemptService
from climbd.backfill.service import PoseBackfill
from climbd.broadcast import Broadcast
from climbd.capture import FrameSource
from climbd.config import Config, ConfigSource
from climbd.export.jobs import ExportManager
from climbd.ghost.live import GhostService
from climbd.pipeline import Pipeline
from climbd.pose import Pose, PoseEstimator
from climbd.recording import Ballast, Recorder
from climbd.replay.media import MediaWorker
from climbd.retention import Retention
from climbd.security.store import AuthStore
from climbd.services import Services
from climbd.statedir import StateDir
from climbd.storage import Database, SessionRecord
from climbd.storage.shares import ShareStore
from climbd.streaming import WhepEndpoint
from climbd.sysinfo import CpuMeter, SystemInfo
from climbd.video import EncodedPacket, VideoStreamInfo
from climbd.visibility import SYSTEM, viewing

__all__ = ["Daemon"]

#: Longest one shutdown step may take, seconds (the unit's TimeoutStopSec is 45 s; the
#: steps that can block are the HTTP server's 3 s, the backfill's 5 s grace, the pipeline).
STOP_STEP_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)


class Daemon:
    """Everything ``climbd run`` runs, on one asyncio event loop.

    Args:
        config: validated configuration.
        state_dir: where the database and session files live (created if missing).
        source_factory: capture seam for tests (fake camera); default opens
            ``config.capture.source``.
        pose_factory: the live pose estimator seam for tests (a slow estimator); default
            BlazePose Full.
        safe_mode: why the daemon runs in safe mode (the config file was invalid): the
            HTTP API and web UI stay reachable with built-in defaults, but nothing is
            captured; health reports the reason.
        config_sources: where each config key's value came from (operator page); {} =
            nothing known.
    """

    def __init__(self, config: Config, state_dir: Path,
                 source_factory: Callable[[int], FrameSource] | None = None,
                 safe_mode: str | None = None,
                 config_sources: dict[str, ConfigSource] | None = None,
                 pose_factory: Callable[[], PoseEstimator] | None = None):
        self.config = config
        self.safe_mode = safe_mode
        self.state_dir = state_dir
        self.paths = StateDir(state_dir)
        self._source_factory = source_factory
        self._pose_factory = pose_factory
        self.backfill: PoseBackfill | None = None
        self.db: Database
        self.pipeline: Pipeline
        self.recorder: Recorder
        self.retention: Retention
        self.exports: ExportManager | None = None
        self.shares: ShareStore | None = None
        self.ghost: GhostService | None = None
        self.attempts: AttemptService | None = None
        self.live: WhepEndpoint | None = None
        self.media: MediaWorker | None = None
        self.mqtt: Any = None
        self.archive: Any = None
        self.auth: AuthStore
        self.services: Services | None = None
        self.app: web.Application | None = None
        self.port: int | None = None
        #: where each non-default config key came from ("file"/"cli"; set by ``climbd run``)
        self.config_sources: dict[str, ConfigSource] = dict(config_sources or {})
        #: health entries of the services, registered by :meth:`add_health`: name -> fn
        self._health_sources: dict[str, Callable[[], Any]] = {"viewers": lambda: 0}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self.started_at = time.monotonic()
        self.notifier: Any = None
        self.admin_socket: Any = None

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

    @property
    def stream_info(self) -> VideoStreamInfo | None:
        """Parameters of the H.264 now published (``source="camera"`` in passthrough)."""
        return self.pipeline.stream_info

    # -- lifecycle -------------------------------------------------------------------------
    def add_health(self, name: str, source: Callable[[], Any]) -> None:
        """Report ``source()`` as ``name`` in :meth:`health` (called as services are built)."""
        self._health_sources[name] = source

    async def start(self) -> None:
        """Boot: build every service in order (see the module docstring).

        Raises:
            StorageError: the state directory or database cannot be used.
            OSError: the HTTP port cannot be bound.
        """
        # The services act for the appliance: they (and the tasks they create) see every
        # session. The HTTP server is started outside this scope, so a request sees only
        # what the security middleware grants its caller (climbd.visibility fails closed).
        with viewing(SYSTEM):
            await self._build_services()
        with viewing(None):  # requests start from nobody, whoever called start()
            await self._serve()
        # 11. ready
        if not self.safe_mode:
            await asyncio.to_thread(self.pipeline.capture.opened.wait, 15.0)
        with viewing(SYSTEM):
            self._start_service()

    async def _build_services(self) -> None:
        """Steps 1-9 of the boot."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        # 1. state directory and reserve file
        self.paths.create()
        ballast = Ballast(self.paths.reserve, cfg.storage.reserve_mb)
        ballast.ensure()
        # 2. catalog
        self.db = await Database.open(self.paths.db)
        # 3. pipeline (threads start in step 9)
        self.pipeline = Pipeline(cfg, loop, self._source_factory, self._pose_factory)
        # 4. retention and the recorder (retention's floor check is the recorder's preflight)
        archived_ids = None
        if cfg.archive.enabled:
            from climbd.storage.outbox import Outbox

            archived_ids = Outbox(self.db).archived_ids
        self.retention = Retention(self.db, self.state_dir, cfg.retention,
                                   cfg.video.bitrate_kbps, self._delete_session,
                                   archived_ids=archived_ids,
                                   delete_local_after_days=cfg.archive.delete_local_after_days)
        self.add_health("retention", self.retention.status)
        self.recorder = Recorder(
            self.db, self.state_dir, cfg.recording, self.pipeline.packets,
            self.pipeline.poses, self.pipeline.request_keyframe,
            source=cfg.capture.source, ballast=ballast,
            preflight=self.retention.check_can_record)
        recovered = await self.recorder.recover()
        if recovered:
            log.warning("recovered %d interrupted session(s)", len(recovered))
        self._tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
        # 4b. pose backfill of finished (and recovered) sessions, in an idle-priority process
        if not self.safe_mode:
            self.backfill = PoseBackfill(self.db, self.state_dir, cfg.pose)
            self.recorder.finished_listeners.append(self.backfill.submit)
            self._tasks.append(asyncio.create_task(self.backfill.run(), name="pose-backfill"))
            self.add_health("backfill", self.backfill.status)
        if self.safe_mode:  # safe mode never deletes anything (the config may be wrong)
            log.warning("safe mode: retention sweeps are off; nothing is deleted")
        else:
            self._tasks.append(asyncio.create_task(self.retention.run_forever(),
                                                   name="retention"))
        # 5. exports
        self.exports = ExportManager(self.db, self.state_dir, cfg.export)
        await self.exports.start()
        self.add_health("exports", self.exports.status)
        self.shares = ShareStore(self.db)
        # 5b. archive to S3-compatible storage (outbox in the catalog, low-priority thread)
        if cfg.archive.enabled and not self.safe_mode:
            from climbd.archive import Archiver
            from climbd.mqtt import device_id_of

            self.archive = Archiver(cfg.archive, self.db, self.state_dir,
                                    device_id_of(cfg.mqtt.device_id), self.recorder)
            self._tasks.append(asyncio.create_task(self.archive.run(), name="archive"))
            self.add_health("archive", self.archive.status)
        else:
            self.add_health("archive", lambda: {"state": "disabled"})
        # 6. attempts: live detector + events, hands-free recording, analysis after recording
        self.attempts = AttemptService(self.db, self.pipeline.poses, self.recorder,
                                       cfg.attempts)
        self._tasks.append(asyncio.create_task(self.attempts.run(), name="attempts"))
        self._tasks.append(asyncio.create_task(self.attempts.backfill(), name="attempts-backfill"))
        self.add_health("attempts", self.attempts.status)
        if self.backfill is not None:  # the filled-in pose changes the attempts
            self.backfill.completed_listeners.append(self._reanalyse)
        # 6b. ghost players (a lift-off arm follows the attempt events) and the live view
        self.ghost = GhostService(self.db, self.recorder, self.attempts.events,
                                  self._live_pose_unavailable)
        sec = cfg.security
        self.live = WhepEndpoint(self, cfg.webrtc, cfg.video.keyframe_interval_s,
                                 message_limit=(sec.messages_per_s, sec.messages_burst),
                                 channel_handlers={"ghost": self.ghost.on_message},
                                 history=self.recorder.buffer,
                                 delay_default_s=cfg.live.delay_s)
        self.live.start()
        live = self.live
        self.add_health("viewers", lambda: live.viewers)
        self.add_health("live", live.stats)
        # 6c. MQTT bridge (events, stats, commands, Home Assistant discovery)
        if cfg.mqtt.enabled and not self.safe_mode:
            from climbd.mqtt import MqttBridge

            self.mqtt = MqttBridge(cfg.mqtt, self.recorder, self.attempts.events,
                                   self._mqtt_stats)
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="mqtt"))
            self.add_health("mqtt", self.mqtt.status)
        else:
            self.add_health("mqtt", lambda: {"state": "disabled"})
        # 7. replay's media worker
        self.media = MediaWorker()
        # 8. credential store
        self.auth = AuthStore(self.db)
        # 9. capture, pose and GPIO (not in safe mode)
        if self.safe_mode:
            log.error("SAFE MODE (nothing is captured): %s", self.safe_mode)
        else:
            self.pipeline.start()
            self._start_gpio()

    async def _serve(self) -> None:
        """Step 10: the HTTP server over the services."""
        cfg = self.config
        from climbd.api import create_app
        from climbd.api.server import make_site, runner_options

        self.services = Services(
            config=cfg, paths=self.paths, db=self.db, recorder=self.recorder,
            health=self.health, exports=self.exports, live=self.live, ghost=self.ghost,
            media=self.media, auth=self.auth, shares=self.shares, attempts=self.attempts,
            system=SystemInfo(CpuMeter(), self.config_sources))
        self.app = create_app(self.services)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     **runner_options(cfg))
        await self._runner.setup()
        site = make_site(self._runner, cfg)  # TLS if configured, connection cap
        await site.start()
        self.port = site.port
        log.info("listening on %s://%s:%s", "https" if site.tls else "http",
                 cfg.server.host, self.port)
        # 10b. local admin socket (`climbd token`, `climbd pair`, `climbd admin-password`)
        from climbd.api.admin_socket import AdminSocket, socket_path

        self.admin_socket = AdminSocket(self.app, socket_path(self.state_dir), self.health)
        try:
            await self.admin_socket.start()
        except OSError as exc:
            log.error("no local admin socket at %s: %s", self.admin_socket.path, exc)

    def _live_pose_unavailable(self) -> str:
        """Why no live pose (so no live lift-off) comes now, or "" (for the ghost's arm at
        lift-off)."""
        if not self.config.pose.enabled:
            return "live pose is off ([pose] enabled = false)"
        if self.pipeline.pose_error is not None:
            return f"live pose failed: {self.pipeline.pose_error}"
        return ""

    def _reanalyse(self, record: SessionRecord) -> None:
        """Recompute a session's attempts from its filled-in pose (backfill listener)."""
        from climbd.attempt_service import analyse_session

        async def run() -> None:
            try:
                await analyse_session(self.db, record.id)
            except Exception:
                log.exception("session %d: attempt analysis after backfill failed", record.id)

        self._tasks.append(asyncio.create_task(run(), name=f"reanalyse-{record.id}"))

    def _mqtt_stats(self) -> dict[str, Any]:
        """The MQTT bridge's periodic stats: camera/pose fps, viewers, disk, recording."""
        ph = self.pipeline.health()
        try:
            free: int | None = shutil.disk_usage(self.state_dir).free
        except OSError:
            free = None
        return {"fps": ph["capture"]["fps"], "pose_fps": ph["pose"]["fps"],
                "camera": ph["capture"]["state"],
                "viewers": self.live.viewers if self.live is not None else 0,
                "disk_free_bytes": free, "recording": self.recorder.recording}

    async def _delete_session(self, session_id: int) -> Any:
        """Retention's delete: the recorder's (which refuses the running recording)."""
        return await self.recorder.delete(session_id)

    def _start_gpio(self) -> None:
        """Buttons and the recording LED, if configured; a bad chip is reported, not fatal."""
        if not self.config.gpio.enabled:
            return
        from climbd.hardware import GpioButtons

        self.gpio = GpioButtons(self.config.gpio, self.recorder,
                                pre_roll_s=self.config.recording.pre_roll_s)
        self._tasks.append(asyncio.create_task(self.gpio.run(), name="gpio"))
        self.add_health("gpio", self.gpio.health)

    def _start_service(self) -> None:
        """Tell systemd we are ready and start the watchdog/status supervisor, if present."""
        from climbd import service

        self.notifier = service.Notifier()
        self.notifier.ready()
        interval = self.notifier.watchdog_interval() or 5.0
        self._tasks.append(asyncio.create_task(
            service.supervise(self, self.notifier, interval), name="supervisor"))

    async def stop(self) -> None:
        """Finalise a running recording, then close every service in reverse boot order
        (HTTP server, ghost, live view, exports, media worker, tasks, pipeline, database)."""
        with viewing(SYSTEM):
            await self._stop_services()

    async def _stop_services(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        if self.recorder.recording:
            try:
                rec = await self.recorder.stop()
                log.info("stopped session %d on shutdown", rec.id)
            except Exception:
                log.exception("could not finalise the running recording")
        if self.admin_socket is not None:
            await self._stop_step("admin socket", self.admin_socket.stop())
        if self._runner is not None:
            await self._stop_step("HTTP server", self._runner.cleanup())
        if self.backfill is not None:   # before the viewers: its worker has a 5 s grace
            await self._stop_step("pose backfill", self.backfill.close())
        if self.ghost is not None:
            await self._stop_step("ghost", self.ghost.close())
        if self.live is not None:
            await self._stop_step("live view", self.live.close())
            self.add_health("viewers", lambda: 0)
            self._health_sources.pop("live", None)
        if self.exports is not None:
            await self._stop_step("exports", self.exports.close())
        if self.mqtt is not None:
            await self._stop_step("MQTT", self.mqtt.close())
        if self.archive is not None:
            await self._stop_step("archive", self.archive.close())
        if self.media is not None:
            self.media.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            await self._stop_step(f"task {t.get_name()}", t)
        await self._stop_step("pipeline", asyncio.to_thread(self.pipeline.stop))
        await self.db.close()

    async def _stop_step(self, name: str, step: Awaitable[Any]) -> None:
        """Await one shutdown step for at most :data:`STOP_STEP_TIMEOUT_S` seconds.

        A step that raises or outlasts its budget is logged and left behind, so one
        stuck service cannot hold the whole stop past systemd's ``TimeoutStopSec``
        (what was recorded is already finalised by then; the database closes last).
        """
        t0 = time.monotonic()
        fut = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({fut}, timeout=STOP_STEP_TIMEOUT_S)
        if not done:
            log.warning("stop: %s did not finish in %.0f s; going on without it", name,
                        STOP_STEP_TIMEOUT_S)
            return
        if not fut.cancelled() and fut.exception() is not None:
            log.error("stop: %s failed", name, exc_info=fut.exception())
        took = time.monotonic() - t0
        if took > 2.0:
            log.info("stop: %s took %.1f s", name, took)

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
        for name, fn in self._health_sources.items():
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
