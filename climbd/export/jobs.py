"""Background export jobs: a queue, a low-priority worker process per job, progress.

:class:`ExportManager` owns the export rows of one process (the daemon, or one
``climbd export``). :meth:`~ExportManager.submit` validates the request against the session,
stores a ``queued`` row and returns at once; up to ``export.max_concurrent`` jobs (default
1) run at a time, each in its own ``python -m climbd.export.worker`` process, and the others
wait in a FIFO queue of at most ``export.max_queued`` (a further request is refused with
:class:`ExportBusy`, HTTP 429). So a second export while one runs is *queued*, and its
resource says ``status: "queued"`` with its ``queue_position``.

Why a process and not a thread: decoding, drawing and H.264 encoding hold the GIL for long
stretches and would slow the daemon's event loop, capture and pose threads. The worker
lowers its own priority before it imports anything heavy (so every thread it starts,
FFmpeg's and OpenBLAS's included, inherits it): nice 19, ``SCHED_IDLE`` (it only gets CPU
time the daemon leaves unused), the last CPU only (the live pipeline keeps the other cores
and their caches; the codecs then run one thread) and, where the kernel supports it, the
idle I/O class.
``bench/bench_export.py`` measures the effect on live pose.

Worker protocol: the manager writes one JSON line (the :class:`JobSpec`) to the worker's
stdin and keeps stdin open; closing it asks the worker to stop (cancel). The worker writes
JSON lines to stdout: ``{"event": "started", "priority": {...}}``, ``{"event":
"progress", "done": n, "total": m}`` (at most ~10 per second), then exactly one of
``{"event": "done", "result": {...}}``, ``{"event": "cancelled"}`` or ``{"event": "error",
"error": class name, "message": text}``. Output goes to ``exports/<id>/<file>.part`` and is
renamed when complete; a failed or cancelled job leaves no partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from climbd import workers
from climbd.config import ExportConfig
from climbd.errors import (
    ExportBusy,
    ExportError,
    ExportRangeError,
    ExportUnavailable,
    SessionNotFound,
    StorageError,
)
from climbd.export.common import ExportResult, Progress, ShouldStop, never
from climbd.security import scope
from climbd.statedir import EXPORTS_DIR, StateDir
from climbd.storage import Database, SessionRecord
from climbd.storage.exports import EXPORT_KINDS, ExportNotFound, ExportRecord, ExportStore

__all__ = [
    "EXPORTS_DIR",
    "ExportBusy",
    "ExportManager",
    "ExportRangeError",
    "ExportUnavailable",
    "JobSpec",
    "run_job",
]

log = logging.getLogger(__name__)

#: Directory of export files inside the state directory: ``exports/<export id>/<file>``.
#: Slowest overlay speed accepted (0.1 = ten times slower than recorded).
MIN_SPEED = 0.1
_EXT = {"video": "mp4", "overlay": "mp4", "csv": "csv", "json": "json"}
_CANCEL_GRACE_S = 5.0


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs, JSON-serialisable (paths absolute).

    Attributes:
        export_id: the export row. kind: 'video', 'overlay', 'csv' or 'json'.
        video: the session's video file ('' for pose-only kinds).
        db: the SQLite catalog (poses are read from it, read-only).
        session: id, name, width, height, fps, duration_s, status of the session.
        start_s, end_s: session seconds or None. speed: overlay speed (1 = as recorded).
        out: the final output file.
        preset, crf: libx264 settings of overlay exports.
        nice, idle_priority: priority the worker gives itself.
    """

    export_id: int
    kind: str
    video: str
    db: str
    session: dict[str, Any]
    start_s: float | None
    end_s: float | None
    speed: float
    out: str
    preset: str = "veryfast"
    crf: int = 20
    nice: int = 19
    idle_priority: bool = True
    #: the session's attempts overlapping the range, with metrics (csv/json exports)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self))


def run_job(spec: JobSpec, progress: Progress | None = None,
            should_stop: ShouldStop = never) -> ExportResult:
    """Produce one export in this process (blocking). The worker process calls this.

    Raises:
        ExportError (and ExportCancelled), DiskFullError, StorageError.
    """
    from climbd.export.clip import export_clip
    from climbd.export.overlay import export_overlay
    from climbd.export.posedata import write_csv, write_json
    from climbd.storage.exports import read_poses_sync

    out = Path(spec.out)
    sid = int(spec.session["id"])
    if spec.kind == "video":
        return export_clip(spec.video, out, spec.start_s, spec.end_s, progress=progress,
                           should_stop=should_stop)
    poses = read_poses_sync(spec.db, sid, spec.start_s, spec.end_s)
    if spec.kind == "overlay":
        return export_overlay(spec.video, out, poses, fps=float(spec.session["fps"]),
                              start_s=spec.start_s, end_s=spec.end_s, speed=spec.speed,
                              preset=spec.preset, crf=spec.crf, progress=progress,
                              should_stop=should_stop)
    if spec.kind == "csv":
        return write_csv(poses, out, attempts=spec.attempts, progress=progress,
                         should_stop=should_stop)
    if spec.kind == "json":
        return write_json(poses, out, session=spec.session, range_s=(spec.start_s, spec.end_s),
                          attempts=spec.attempts, progress=progress, should_stop=should_stop)
    raise ExportError(f"unknown export kind {spec.kind!r}")


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:40] or "session"


def output_name(session: SessionRecord, kind: str, start_s: float | None,
                end_s: float | None, speed: float) -> str:
    """File name of an export, e.g. ``crimp-project-s12-overlay-3.0-8.0s-0.5x.mp4``."""
    parts = [_slug(session.name), f"s{session.id}", kind]
    if start_s is not None or end_s is not None:
        lo = f"{start_s:g}" if start_s is not None else "0"
        hi = f"{end_s:g}" if end_s is not None else "end"
        parts.append(f"{lo}-{hi}s")
    if kind == "overlay" and speed != 1:
        parts.append(f"{speed:g}x")
    return "-".join(parts) + "." + _EXT[kind]


@dataclass
class _Job:
    export_id: int
    done: int = 0
    total: int = 0
    process: asyncio.subprocess.Process | None = None
    cancel_requested: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    started_mono: float = field(default_factory=time.monotonic)
    priority: dict[str, Any] = field(default_factory=dict)


class ExportManager:
    """Queue and run exports in low-priority worker processes (see the module docstring).

    Args:
        db: the session catalog (export rows live in it).
        state_dir: files go to ``<state_dir>/exports/<id>/``.
        config: the ``[export]`` settings.
        python: interpreter that runs the worker (default: this one).

    Call :meth:`start` once before use and :meth:`close` at shutdown. Single event loop.
    """

    def __init__(self, db: Database, state_dir: Path, config: ExportConfig | None = None,
                 python: str = sys.executable):
        self.db = db
        self.store = ExportStore(db)
        self.state_dir = state_dir
        self.paths = StateDir(state_dir)
        self.config = config or ExportConfig()
        self._python = python
        self._queue: deque[int] = deque()
        self._jobs: dict[int, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: dict[int, list[Callable[[int, int], None]]] = {}
        #: who asked for each waiting/running export (their session-visibility scope): the
        #: job runs as its requester, not as whoever's request happened to start it
        self._requesters: dict[int, scope.Viewer | None] = {}
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Fail the exports a dead process left queued or running, and drop their files."""
        for rec in await self.store.fail_orphaned(
                "interrupted: the process running this export stopped"):
            log.warning("export %d was interrupted (process %s gone)", rec.id, rec.owner_pid)
            await asyncio.to_thread(shutil.rmtree, self.export_dir(rec.id), True)

    async def close(self) -> None:
        """Cancel queued and running exports (rows marked cancelled) and wait for workers."""
        self._closed = True
        for export_id in list(self._queue):
            with contextlib.suppress(ExportError):
                await self.cancel(export_id, reason="cancelled: the daemon stopped")
        for export_id in list(self._jobs):
            with contextlib.suppress(ExportError):
                await self.cancel(export_id, reason="cancelled: the daemon stopped")
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _attempts(self, session_id: int, kind: str, start_s: float | None,
                        end_s: float | None) -> list[dict[str, Any]]:
        """The session's attempts overlapping the range (csv/json exports only)."""
        if kind not in ("csv", "json"):
            return []
        from climbd.attempt_service import ensure_analysed

        try:
            found = await ensure_analysed(self.db, session_id)
        except (StorageError, ValueError) as exc:
            log.warning("export of session %d without attempts: %s", session_id, exc)
            return []
        lo = -math.inf if start_s is None else start_s
        hi = math.inf if end_s is None else end_s
        return [a for a in found
                if a["start_s"] <= hi and (a["end_s"] is None or a["end_s"] >= lo)]

    def export_dir(self, export_id: int) -> Path:
        """``<state_dir>/exports/<export_id>``."""
        return self.paths.export_dir(export_id)

    # -- requests --------------------------------------------------------------------------
    async def validate(self, session_id: int, kind: str, start_s: float | None,
                       end_s: float | None, speed: float) -> SessionRecord:
        """Check an export request against the session; returns the session.

        Raises:
            SessionNotFound: no such session.
            ExportRangeError: bad kind, speed or range (outside ``[0, duration]``, empty).
            ExportUnavailable: the session is recording/processing, or a video export of a
                session without a video file.
        """
        if kind not in EXPORT_KINDS:
            raise ExportRangeError(f"kind must be one of {', '.join(EXPORT_KINDS)}")
        if not math.isfinite(speed) or not (MIN_SPEED <= speed <= 1.0):
            raise ExportRangeError(f"speed must be between {MIN_SPEED} and 1, got {speed}")
        if kind != "overlay" and speed != 1.0:
            raise ExportRangeError("speed applies only to 'overlay' exports (the 'video' "
                                   "export is the video as recorded)")
        session = await self.db.get_session(session_id)
        if session.status in ("recording", "processing"):
            raise ExportUnavailable(f"session {session_id} is still {session.status}: export "
                                    "it when it has finished")
        for name, value in (("start_s", start_s), ("end_s", end_s)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ExportRangeError(f"{name} must be a finite number >= 0, got {value}")
        duration = session.duration_s
        slack = 1.0 / session.fps if session.fps > 0 else 0.05
        if start_s is not None and start_s >= duration:
            raise ExportRangeError(f"start_s {start_s} is outside the session (0 to "
                                   f"{duration:.3f} s)")
        if end_s is not None and end_s > duration + slack:
            raise ExportRangeError(f"end_s {end_s} is outside the session (0 to "
                                   f"{duration:.3f} s)")
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise ExportRangeError(f"end_s ({end_s}) must be after start_s ({start_s})")
        if kind in ("video", "overlay"):
            video = self._video_file(session)
            if video is None:
                why = f" ({session.error})" if session.error else ""
                raise ExportUnavailable(
                    f"session {session_id} has no video to export (status "
                    f"{session.status}{why}); its poses can still be exported as csv or json")
        return session

    def _video_file(self, session: SessionRecord) -> Path | None:
        if not session.video_path:
            return None
        return self.paths.resolve_inside(session.video_path)

    async def submit(self, session_id: int, kind: str, start_s: float | None = None,
                     end_s: float | None = None, speed: float = 1.0) -> ExportRecord:
        """Validate, store a 'queued' export and schedule it; returns at once.

        Raises:
            SessionNotFound, ExportRangeError, ExportUnavailable: see :meth:`validate`.
            ExportBusy: ``max_queued`` exports are already waiting.
            ExportError: the manager is closed.
        """
        if self._closed:
            raise ExportError("exports are shutting down")
        await self.validate(session_id, kind, start_s, end_s, speed)
        busy = len(self._jobs) >= self.config.max_concurrent
        if busy and len(self._queue) >= self.config.max_queued:
            raise ExportBusy(f"{len(self._jobs)} export(s) running and {len(self._queue)} "
                             "waiting: try again later")
        rec = await self.store.create(session_id, kind, start_s=start_s, end_s=end_s,
                                      speed=speed)
        self._requesters[rec.id] = scope.current()
        self._queue.append(rec.id)
        log.info("export %d queued: session %d %s [%s, %s] speed %g", rec.id, session_id,
                 kind, start_s, end_s, speed, extra={"session_id": session_id})
        self._pump()
        return rec

    def _pump(self) -> None:
        while not self._closed and self._queue and len(self._jobs) < self.config.max_concurrent:
            export_id = self._queue.popleft()
            job = _Job(export_id)
            self._jobs[export_id] = job
            # a fresh context: the task must not inherit the viewer of the request (or the
            # finished export) that happened to call _pump; _run enters its requester's
            task = asyncio.create_task(self._run_as_system(job), name=f"export-{export_id}",
                                       context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- progress --------------------------------------------------------------------------
    def progress(self, export_id: int) -> dict[str, Any]:
        """Live progress of an export of this process: ``{"frames_done", "frames_total",
        "progress" (0..1 or None), "queue_position" (1 = next, or None), "elapsed_s"}``."""
        job = self._jobs.get(export_id)
        position = (list(self._queue).index(export_id) + 1) if export_id in self._queue \
            else None
        if job is None:
            return {"frames_done": None, "frames_total": None, "progress": None,
                    "queue_position": position, "elapsed_s": None}
        return {"frames_done": job.done, "frames_total": job.total,
                "progress": round(job.done / job.total, 4) if job.total else 0.0,
                "queue_position": None,
                "elapsed_s": round(time.monotonic() - job.started_mono, 3)}

    def is_active(self, export_id: int) -> bool:
        """True while the export is queued or running in this process."""
        return export_id in self._jobs or export_id in self._queue

    def listen(self, export_id: int, fn: Callable[[int, int], None]) -> None:
        """Call ``fn(done, total)`` on every progress report of this export."""
        self._listeners.setdefault(export_id, []).append(fn)

    def status(self) -> dict[str, Any]:
        """Running and queued exports, for the health endpoint."""
        return {"running": sorted(self._jobs), "queued": list(self._queue),
                "max_concurrent": self.config.max_concurrent,
                "priority": next((j.priority for j in self._jobs.values() if j.priority), {})}

    async def wait(self, export_id: int, timeout: float | None = None) -> ExportRecord:
        """Wait until the export is no longer queued or running; returns its row."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self._jobs.get(export_id)
            if job is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(job.finished.wait(), remaining)
            elif export_id not in self._queue:
                return await self.store.get(export_id)
            else:
                await asyncio.sleep(0.05)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"export {export_id} still queued")

    # -- cancel / delete -------------------------------------------------------------------
    async def cancel(self, export_id: int, reason: str = "cancelled") -> ExportRecord:
        """Stop a queued or running export (its partial file is removed); the row stays,
        status 'cancelled'. A finished export is returned unchanged.

        Raises:
            ExportNotFound: no such export.
        """
        if export_id in self._queue:
            self._queue.remove(export_id)
            return await self.store.update(export_id, status="cancelled", error=reason)
        job = self._jobs.get(export_id)
        if job is None:
            return await self.store.get(export_id)
        job.cancel_requested = True
        proc = job.process
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()  # the worker's signal to stop and clean up
            try:
                await asyncio.wait_for(job.finished.wait(), _CANCEL_GRACE_S)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await job.finished.wait()
        rec = await self.store.get(export_id)
        if rec.status == "cancelled" and reason != "cancelled":
            rec = await self.store.update(export_id, error=reason)
        return rec

    async def delete(self, export_id: int) -> ExportRecord:
        """Cancel the export if it runs, then delete its row, shares and files."""
        await self.cancel(export_id)
        rec = await self.store.delete(export_id)
        await asyncio.to_thread(shutil.rmtree, self.export_dir(export_id), True)
        log.info("export %d deleted", export_id)
        return rec

    def file_path(self, rec: ExportRecord) -> Path | None:
        """The finished export's file, or None when it is not done or is missing."""
        if rec.status != "done" or not rec.path:
            return None
        path = (self.state_dir / rec.path).resolve()
        root = self.paths.exports.resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    # -- running ---------------------------------------------------------------------------
    async def _run_as_system(self, job: _Job) -> None:
        """:meth:`_run` as the appliance; only reading the session is done as the
        requester."""
        with scope.viewing(scope.SYSTEM):
            await self._run(job)

    async def _run(self, job: _Job) -> None:
        export_id = job.export_id
        requester = self._requesters.pop(export_id, None)
        try:
            try:
                rec = await self.store.get(export_id)
                with scope.viewing(requester):
                    session = await self.db.get_session(rec.session_id)
                rec = await self.store.update(export_id, status="running", owner_pid=os.getpid())
            except (ExportError, SessionNotFound) as exc:  # deleted (or hidden) while queued
                log.info("export %d dropped before it started: %s", export_id, exc)
                with contextlib.suppress(Exception):
                    await self.store.update(export_id, status="failed",
                                            error=f"not started: {exc}")
                return
            directory = self.export_dir(export_id)
            out = directory / output_name(session, rec.kind, rec.start_s, rec.end_s, rec.speed)
            video = self._video_file(session)
            spec = JobSpec(
                export_id=export_id, kind=rec.kind, video=str(video or ""),
                db=str(self.db.path.resolve()),
                session={"id": session.id, "name": session.name, "width": session.width,
                         "height": session.height, "fps": session.fps,
                         "duration_s": session.duration_s, "status": session.status},
                start_s=rec.start_s, end_s=rec.end_s, speed=rec.speed, out=str(out),
                preset=self.config.preset, crf=self.config.crf, nice=self.config.nice,
                idle_priority=self.config.idle_priority,
                attempts=await self._attempts(session.id, rec.kind, rec.start_s, rec.end_s))
            outcome = await self._run_worker(job, spec)
            try:
                await self._record_outcome(job, rec, outcome, out)
            except ExportNotFound:  # deleted (or its session deleted) while it ran
                log.info("export %d was deleted while it ran: its files are removed",
                         export_id)
                await asyncio.to_thread(shutil.rmtree, directory, True)
        except Exception:
            log.exception("export %d: unexpected failure", export_id)
            with contextlib.suppress(Exception):
                await self.store.update(export_id, status="failed",
                                        error="internal error (see the daemon log)")
        finally:
            self._jobs.pop(export_id, None)
            self._listeners.pop(export_id, None)
            job.finished.set()
            self._pump()

    async def _run_worker(self, job: _Job, spec: JobSpec) -> dict[str, Any]:
        """Run the worker process; returns its final event (or a synthetic error one)."""
        Path(spec.out).parent.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            self._python, "-m", "climbd.export.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "GLOG_minloglevel": "2"})
        job.process = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(proc.stderr.read())
        final: dict[str, Any] | None = None
        try:
            if job.cancel_requested:
                proc.stdin.close()
            else:
                proc.stdin.write(spec.to_json().encode() + b"\n")
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
            async for event in workers.events(proc.stdout, f"export {job.export_id}: worker"):
                kind = event.get("event")
                if kind == "progress":
                    job.done, job.total = int(event["done"]), int(event["total"])
                    for fn in self._listeners.get(job.export_id, []):
                        fn(job.done, job.total)
                elif kind == "started":
                    job.priority = dict(event.get("priority", {}))
                elif kind in ("done", "error", "cancelled"):
                    final = event
        finally:
            await proc.wait()
            stderr = (await stderr_task).decode(errors="replace").strip()
            if stderr and proc.returncode not in (0, 3):
                log.warning("export %d worker stderr: %s", job.export_id, stderr[-2000:])
        if final is None:
            if job.cancel_requested:
                return {"event": "cancelled"}
            detail = stderr.splitlines()[-1] if stderr else ""
            return {"event": "error", "error": "ExportError",
                    "message": f"the export worker exited with code {proc.returncode}"
                               + (f": {detail}" if detail else "")}
        return final

    async def _record_outcome(self, job: _Job, rec: ExportRecord, outcome: dict[str, Any],
                              out: Path) -> None:
        export_id = job.export_id
        kind = outcome["event"]
        part = out.with_name(out.name + ".part")
        if kind == "done":
            r = outcome["result"]
            rel = str(Path(r["path"]).resolve().relative_to(self.state_dir.resolve()))
            await self.store.update(
                export_id, status="done", path=rel, bytes=int(r["bytes"]),
                frames=int(r["frames"]), actual_start_s=float(r["actual_start_s"]),
                actual_end_s=float(r["actual_end_s"]), note=str(r.get("note", "")), error=None)
            log.info("export %d done: %s, %d frames, %d bytes in %.1f s", export_id, rel,
                     r["frames"], r["bytes"], time.monotonic() - job.started_mono,
                     extra={"session_id": rec.session_id})
            return
        with contextlib.suppress(OSError):
            part.unlink()
        with contextlib.suppress(OSError):
            out.unlink()
        with contextlib.suppress(OSError):
            out.parent.rmdir()
        if kind == "cancelled" or job.cancel_requested:
            await self.store.update(export_id, status="cancelled", error="cancelled")
            log.info("export %d cancelled", export_id)
            return
        message = f"{outcome.get('error', 'ExportError')}: {outcome.get('message', '')}"
        await self.store.update(export_id, status="failed", error=message)
        log.error("export %d failed: %s", export_id, message,
                  extra={"session_id": rec.session_id})
