"""Attempts in the running daemon: analysis of stored sessions, the live detector, events,
and hands-free recording.

- :func:`analyse_session` detects and measures a stored session's attempts
  (:func:`climbd.attempts.analysis.analyse_series`, in a thread) and stores them
  (:class:`~climbd.storage.attempts.AttemptStore`). Run after every recording and ingest,
  again on demand, and lazily when pose was filled in after the last analysis.
- :class:`AttemptService` (built by :class:`climbd.daemon.Daemon`) feeds every live pose
  result to an :class:`~climbd.attempts.AttemptDetector` and publishes
  :class:`LiveAttemptEvent` s on :attr:`AttemptService.events` (an :class:`EventHub`), so other
  parts (ghost, UI push, auto-record) can react to a climber leaving or reaching the ground.
- Hands-free recording (``[attempts] auto_record``): a live attempt start records a session
  from ``pre_s`` before lift-off (the recorder's pre-roll) to ``post_s`` after landing, named
  ``Attempt HH:MM``; never while another recording runs, at most ``max_s`` long, and not
  again within ``cooldown_s`` of the last one ending.

No HTTP here (:mod:`climbd.api.attempts` maps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from climbd.attempts import AttemptDetector, AttemptEvent
from climbd.attempts.analysis import analyse_series
from climbd.broadcast import Broadcast, Subscription
from climbd.errors import AlreadyRecording, ClimbdError, NotRecording, SessionNotFound
from climbd.storage.attempts import AttemptStore
from climbd.visibility import SYSTEM, viewing

if TYPE_CHECKING:
    from climbd.config import AttemptsConfig
    from climbd.pose import Pose
    from climbd.recording import Recorder
    from climbd.storage import Database, SessionRecord

__all__ = ["DETECTOR_VERSION", "AttemptService", "EventHub", "LiveAttemptEvent",
           "analyse_session", "ensure_analysed"]

log = logging.getLogger(__name__)

#: Bumped when detection or metrics change, so stored analyses are recomputed.
DETECTOR_VERSION = 1


async def analyse_session(db: Database, session_id: int) -> list[dict[str, Any]]:
    """Detect, measure and store the attempts of a stored session; returns them.

    Raises:
        SessionNotFound: no such (visible) session. StorageError, DiskFullError.
    """
    rec = await db.get_session(session_id)
    series = await db.poses(session_id)
    found = await asyncio.to_thread(
        analyse_series, series.times, series.image, series.world, width=rec.width,
        height=rec.height, duration_s=rec.duration_s or None)
    await AttemptStore(db).replace(session_id, found, frames_with_pose=len(series),
                                   version=DETECTOR_VERSION)
    return await AttemptStore(db).for_session(session_id)


async def ensure_analysed(db: Database, session_id: int) -> list[dict[str, Any]]:
    """The stored attempts, recomputed first if the session was never analysed, its pose
    changed since (``frames_with_pose``), or the detector version changed. A session still
    recording is analysed as it stands but not stored.

    Raises:
        SessionNotFound, StorageError, DiskFullError.
    """
    rec = await db.get_session(session_id)
    store = AttemptStore(db)
    if rec.status == "recording":
        series = await db.poses(session_id)
        found = await asyncio.to_thread(
            analyse_series, series.times, series.image, series.world, width=rec.width,
            height=rec.height, duration_s=None)
        return [{"index": i, **a} for i, a in enumerate(found)]
    info = await store.analysis(session_id)
    if info is None or info["frames_with_pose"] != rec.frames_with_pose or \
            info["version"] != DETECTOR_VERSION:
        return await analyse_session(db, session_id)
    return await store.for_session(session_id)


@dataclass(frozen=True)
class LiveAttemptEvent:
    """A live attempt start or end.

    Attributes:
        kind: ``start`` or ``end``.
        t: monotonic capture time (s) of the lift-off / landing (in the past: decisions are
            confirmed up to ~1 s later).
        detected_at: monotonic capture time (s) of the frame that confirmed it.
        number: the live attempt's sequence number since the daemon started (1, 2, ...).
        end_reason: for ``end``: ``landed``, ``dropped`` or ``lost``.
        wall_time: unix time (s) of ``t``.
    """

    kind: Literal["start", "end"]
    t: float
    detected_at: float
    number: int
    end_reason: str | None
    wall_time: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "t": self.t, "detected_at": self.detected_at,
                "number": self.number, "end_reason": self.end_reason,
                "wall_time": self.wall_time}


class EventHub:
    """A list of callbacks run on the event loop for every published event.

    A callback that raises is logged and kept; callbacks must not block (start a task for
    slow work). :meth:`subscribe` returns the function that unsubscribes.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[LiveAttemptEvent], None]] = []

    def subscribe(self, callback: Callable[[LiveAttemptEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def publish(self, event: LiveAttemptEvent) -> None:
        """Run every callback with ``event``."""
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:
                log.exception("attempt event callback %r failed", cb)


class AttemptService:
    """The live detector, attempt events, hands-free recording and post-recording analysis.

    Args:
        db: the session catalog.
        poses: the pipeline's pose broadcast.
        recorder: the recorder (auto-record drives it; its finished sessions get analysed).
        config: the ``[attempts]`` section.
    """

    def __init__(self, db: Database, poses: Broadcast[Pose], recorder: Recorder,
                 config: AttemptsConfig):
        self.db = db
        self.config = config
        self.events = EventHub()
        self._poses = poses
        self._recorder = recorder
        self._detector: AttemptDetector | None = None
        self._size: tuple[int, int] | None = None
        self._number = 0
        self._current: LiveAttemptEvent | None = None
        self._last: LiveAttemptEvent | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: the session auto-record started and still owns, and when to stop it
        self._auto_session: int | None = None
        self._auto_stop_at: float | None = None
        self._auto_started_at: float | None = None
        self._cooldown_until = 0.0
        self.auto_sessions: list[int] = []
        self.frames = 0
        self.analysed = 0
        recorder.finished_listeners.append(self._on_finished)
        self.events.subscribe(self._auto_record)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Live state for health and the UI."""
        d = self._detector
        return {
            "state": d.state if d else "unknown",
            "ground_y": None if d is None or d.ground is None else round(d.ground, 4),
            "current": self._current.to_dict() if self._current else None,
            "last": self._last.to_dict() if self._last else None,
            "attempts_seen": self._number,
            "auto_record": self.config.auto_record,
            "auto_session_id": self._auto_session,
            "frames": self.frames,
        }

    # -- live --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume the pose broadcast until cancelled (a background task)."""
        sub: Subscription[Pose] = self._poses.subscribe(maxsize=120, policy="latest")
        try:
            async for pose in sub:
                self.feed(pose)
                self._check_auto_stop(pose.timestamp)
        finally:
            for t in list(self._tasks):
                t.cancel()

    def feed(self, pose: Pose) -> list[AttemptEvent]:
        """Feed one live pose result (also used by the benchmark); returns the raw events."""
        size = (pose.width, pose.height)
        if self._detector is None or size != self._size:
            self._detector = AttemptDetector(pose.width / pose.height if pose.height else 1.0)
            self._size = size
        self.frames += 1
        events = self._detector.update(pose.timestamp, pose.image)
        for e in events:
            if e.kind == "start":
                self._number += 1
            ev = LiveAttemptEvent(e.kind, e.t, e.detected_at, self._number, e.attempt.end_reason,
                                  time.time() - (time.monotonic() - e.t))
            if e.kind == "start":
                self._current = ev
            else:
                self._current = None
                self._last = ev
            log.info("attempt %d %s at %.2f (confirmed %.2f s later)", ev.number, ev.kind,
                     ev.t, ev.detected_at - ev.t)
            self.events.publish(ev)
        return events

    # -- hands-free recording ----------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _auto_record(self, ev: LiveAttemptEvent) -> None:
        cfg = self.config
        if not cfg.auto_record:
            return
        if ev.kind == "start":
            now = time.monotonic()
            if self._recorder.recording:
                log.info("auto-record: attempt %d not recorded: a recording is running",
                         ev.number)
                return
            if now < self._cooldown_until:
                log.info("auto-record: attempt %d not recorded: cool-down", ev.number)
                return
            self._spawn(self._auto_start(ev))
        elif ev.kind == "end" and self._auto_session is not None:
            self._auto_stop_at = ev.t + cfg.post_s

    async def _auto_start(self, ev: LiveAttemptEvent) -> None:
        pre = self.config.pre_s + max(0.0, time.monotonic() - ev.t)
        name = time.strftime("Attempt %H:%M", time.localtime(ev.wall_time))
        try:
            rec = await self._recorder.start(name=name, pre_roll_s=pre,
                                             description="recorded hands-free")
        except AlreadyRecording:
            return
        except ClimbdError as exc:
            log.warning("auto-record: cannot start: %s", exc)
            return
        self._auto_session = rec.id
        self._auto_started_at = ev.t
        self._auto_stop_at = None
        self.auto_sessions.append(rec.id)
        log.info("auto-record: session %d %r for attempt %d", rec.id, name, ev.number)

    def _check_auto_stop(self, now: float) -> None:
        sid = self._auto_session
        if sid is None:
            return
        active = self._recorder.active_session
        if active is None or active[0] != sid:  # stopped by hand, failed, ...
            self._auto_session = None
            return
        too_long = self._auto_started_at is not None and \
            now - self._auto_started_at >= self.config.max_s
        if (self._auto_stop_at is not None and now >= self._auto_stop_at) or too_long:
            self._auto_session = None
            self._auto_stop_at = None
            self._spawn(self._auto_stop(sid, too_long))

    async def _auto_stop(self, sid: int, too_long: bool) -> None:
        active = self._recorder.active_session
        if active is None or active[0] != sid:
            return
        with contextlib.suppress(NotRecording):
            await self._recorder.stop()
            log.info("auto-record: session %d stopped%s", sid,
                     " (max_s reached)" if too_long else "")
        self._cooldown_until = time.monotonic() + self.config.cooldown_s

    # -- analysis after a recording ----------------------------------------------------------
    def _on_finished(self, record: SessionRecord) -> None:
        self._spawn(self._analyse(record.id))

    async def _analyse(self, session_id: int) -> None:
        try:
            with viewing(SYSTEM):  # the appliance's own work, whoever stopped the recording
                await analyse_session(self.db, session_id)
            self.analysed += 1
        except SessionNotFound:
            return
        except ClimbdError as exc:
            log.warning("session %d: attempt analysis failed: %s", session_id, exc)

    async def backfill(self, limit: int = 200) -> int:
        """Analyse finished sessions that never were (e.g. recorded before this version).
        Returns how many were analysed."""
        done = 0
        with viewing(SYSTEM):
            recs, _ = await self.db.list_sessions(limit=limit)
        store = AttemptStore(self.db)
        for rec in recs:
            if rec.status == "recording":
                continue
            with viewing(SYSTEM):
                info = await store.analysis(rec.id)
            if info is None or info["version"] != DETECTOR_VERSION or \
                    info["frames_with_pose"] != rec.frames_with_pose:
                await self._analyse(rec.id)
                done += 1
        return done
