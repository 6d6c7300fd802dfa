"""The backfill service on the daemon's event loop: a FIFO of sessions, one worker process.

Built by :class:`climbd.daemon.Daemon` after the recorder (whose ``finished_listeners``
submit every finished session) and after crash recovery (sessions left ``live`` or
``backfilling`` are queued at start). One session at a time, one
``python -m climbd.backfill.worker`` process per session (:mod:`climbd.backfill.worker`:
nice 19, ``SCHED_IDLE``, last CPU), its chunks staged in SQLite as they arrive and swapped
in at the end (:class:`climbd.storage.backfill.BackfillStore`). ``completed_listeners`` are
called with the final record (the daemon recomputes the session's attempts there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from climbd import workers
from climbd.config import PoseConfig
from climbd.errors import SessionNotFound
from climbd.storage import Database, SessionRecord
from climbd.storage.backfill import BackfillStore

__all__ = ["PoseBackfill"]

log = logging.getLogger(__name__)

_STOP_GRACE_S = 5.0


class PoseBackfill:
    """Fills in the pose of frames live pose skipped, session by session.

    With ``pose.enabled = false`` no worker runs: finished sessions become ``complete`` with
    the (zero) frames they have.

    Args:
        db: the session catalog.
        state_dir: root the sessions' ``video_path`` is relative to.
        pose: pose settings (the worker builds its own :class:`climbd.pose.PoseEstimator`).
        nice, idle: the worker's priority (nice value; ``SCHED_IDLE`` + idle I/O + last CPU).
        chunk_s: seconds of video per staged chunk (and per progress update).
        python: interpreter of the worker process.
    """

    def __init__(self, db: Database, state_dir: Path, pose: PoseConfig, *, nice: int = 19,
                 idle: bool = True, chunk_s: float = 1.0, python: str = sys.executable):
        self.db = db
        self.store = BackfillStore(db)
        self.state_dir = state_dir
        self.pose = pose
        self.nice = nice
        self.idle = idle
        self.chunk_s = chunk_s
        self._python = python
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._closing = False
        self.current: int | None = None
        self.frames_done = 0
        self.frames_total = 0
        self.fps = 0.0
        self.completed = 0
        self.last_error: str | None = None
        self.priority: dict[str, Any] = {}
        #: called with the final record of every session whose backfill completed
        self.completed_listeners: list[Callable[[SessionRecord], None]] = []

    # -- state ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Health entry: ``state`` ("idle"/"running"), ``session_id``, ``frames_done`` /
        ``frames_total`` of the running fill, ``fps`` (frames/s of the fill so far),
        ``queued`` (sessions waiting), ``completed`` (fills since start), ``last_error``,
        ``priority`` (what the worker applied: nice, sched, io, cpus)."""
        return {"state": "running" if self.current is not None else "idle",
                "session_id": self.current, "frames_done": self.frames_done,
                "frames_total": self.frames_total, "fps": round(self.fps, 2),
                "queued": self._queue.qsize(), "completed": self.completed,
                "last_error": self.last_error, "priority": self.priority}

    def submit(self, record: SessionRecord | int) -> None:
        """Queue a finished session (a recorder finished listener; never blocks)."""
        sid = record if isinstance(record, int) else record.id
        if sid not in self._queued and sid != self.current:
            self._queued.add(sid)
            self._queue.put_nowait(sid)

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Queue the unfinished sessions, then fill sessions until cancelled."""
        for sid in await self.store.pending():
            self.submit(sid)
        while True:
            sid = await self._queue.get()
            self._queued.discard(sid)
            self.current = sid
            try:
                await self.fill(sid)
            except asyncio.CancelledError:
                raise
            except SessionNotFound:
                log.info("session %d was deleted during its pose backfill", sid)
            except Exception as exc:  # never let one session stop the service
                self.last_error = f"session {sid}: {exc}"
                log.exception("session %d: pose backfill failed", sid)
            finally:
                self.current = None

    async def close(self) -> None:
        """Stop the running worker (its committed chunks stay: the next start resumes)."""
        self._closing = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        await workers.stop(proc, _STOP_GRACE_S)

    # -- one session ---------------------------------------------------------------------
    async def fill(self, session_id: int) -> SessionRecord:
        """Backfill one session to ``complete`` (or resume it); returns the final record.

        Raises:
            SessionNotFound: the session was deleted. StorageError: database error.
        """
        rec = await self.store.begin(session_id)
        if rec.pose_status != "backfilling":
            return rec
        if not self.pose.enabled:  # nothing will analyse it: say so instead of "live"
            return await self.store.give_up(session_id, "pose is disabled")
        video = self.state_dir / rec.video_path
        start = await self.store.next_frame(session_id)
        self.frames_done, self.frames_total, self.fps = start, rec.frame_count, 0.0
        log.info("session %d: pose backfill from frame %d of %d", session_id, start,
                 rec.frame_count, extra={"session_id": session_id})
        t0 = time.monotonic()
        final = await self._run_worker(session_id, video, start, t0)
        if final.get("event") == "done":
            rec = await self.store.complete(session_id, int(final["frames"]))
            self.completed += 1
            log.info("session %d: pose backfill complete: %d frames, %d with pose, %.1f s "
                     "(%.1f frames/s)", session_id, rec.frames_analyzed, rec.frames_with_pose,
                     time.monotonic() - t0, self.fps, extra={"session_id": session_id})
            for fn in list(self.completed_listeners):
                try:
                    fn(rec)
                except Exception:
                    log.exception("session %d: backfill listener failed", session_id)
            return rec
        if final.get("event") == "error":
            reason = f"{final.get('error')}: {final.get('message')}"
            self.last_error = f"session {session_id}: {reason}"
            log.error("session %d: pose backfill gave up (live pose kept): %s", session_id,
                      reason, extra={"session_id": session_id})
            return await self.store.give_up(session_id, reason)
        return await self.db.get_session(session_id)  # stopped: resumes at the next start

    async def _run_worker(self, session_id: int, video: Path, start: int,
                          t0: float) -> dict[str, Any]:
        if self._closing:
            return {"event": "cancelled"}
        spec = {"video": str(video), "start_frame": start, "pose": self.pose.model_dump(),
                "nice": self.nice, "idle_priority": self.idle, "chunk_s": self.chunk_s}
        proc = await asyncio.create_subprocess_exec(
            self._python, "-m", "climbd.backfill.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "GLOG_minloglevel": "2"}, limit=16 * 1024 * 1024)
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        if self._closing:   # close() ran while the worker was being spawned: it has no
            with contextlib.suppress(ProcessLookupError):   # job yet, nothing to keep
                proc.kill()
            await proc.wait()
            self._proc = None
            return {"event": "cancelled"}
        stderr_task = asyncio.create_task(proc.stderr.read())
        final: dict[str, Any] = {"event": "cancelled"}
        try:
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            async for event in workers.events(proc.stdout, "backfill worker"):
                kind = event.get("event")
                if kind == "started":
                    self.priority = dict(event.get("priority", {}))
                elif kind == "chunk":
                    blob = base64.b64decode(event["blob"]) if event.get("blob") else None
                    await self.store.add_chunk(session_id, int(event["next_frame"]), blob,
                                               float(event["t_start"]), float(event["t_end"]),
                                               int(event["n"]))
                    self.frames_done = int(event["next_frame"])
                    elapsed = time.monotonic() - t0
                    self.fps = (self.frames_done - start) / elapsed if elapsed > 0 else 0.0
                elif kind in ("done", "error"):
                    final = event
        finally:
            # done/error: it exits by itself (stdin EOF changes nothing then); otherwise EOF
            # asks it to stop at the next frame
            await workers.stop(proc, _STOP_GRACE_S)
            stderr = (await stderr_task).decode(errors="replace").strip()
            if stderr and proc.returncode not in (0, 3):
                log.warning("backfill worker stderr: %s", stderr[-2000:])
            self._proc = None
        if final.get("event") == "cancelled" and proc.returncode not in (0, 3, None) \
                and not self._closing:
            detail = stderr.splitlines()[-1] if stderr else ""
            return {"event": "error", "error": "WorkerExit",
                    "message": f"the backfill worker exited with code {proc.returncode}"
                               + (f": {detail}" if detail else "")}
        return final
