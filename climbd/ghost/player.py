"""The ghost player: drives one :class:`~climbd.ghost.pacer.GhostPacer` for one viewer.

- :class:`~climbd.ghost.pacer.GhostPacer` — pure (no I/O, no asyncio): the timeline.
- :class:`~climbd.ghost.wire` — the binary ghost pose and the JSON control messages.
- :class:`GhostPlayer` — async: drives one pacer for one viewer. Its I/O goes through a
  :class:`GhostHost` (load a session's poses by time window, send a message, map a clock time
  to the viewer's live video timestamp), so it knows nothing of HTTP, SQLite or WebRTC;
  :mod:`climbd.ghost.live` plugs it into a viewer's ``landmarks`` data channel.

Three ways to start a ghost: ``play`` (now), ``arm`` (with the next recording: anchored on its
first frame) and ``arm`` at ``lift-off`` (a :class:`Race`: one attempt of the ghost session
against the live climber, anchored on the live attempt detector's lift-off; see
:mod:`climbd.ghost.wire`). Armed players poll their host every :data:`ARM_POLL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from climbd.errors import GhostError, NoAttempt, NoLiftoff, SessionNotFound, StorageError
from climbd.ghost.pacer import Due, GhostPacer, check_speed
from climbd.ghost.wire import GhostControl, pack_ghost
from climbd.security.ratelimit import TokenBucket
from climbd.storage.posecodec import PoseSeries

__all__ = ["GhostHost", "GhostPlayer", "GhostSession", "Race"]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF
_CLOCK_RATE = 90_000


@dataclass(frozen=True, slots=True)
class GhostSession:
    """What the player needs to know of a session: id, duration (s), nominal fps, name,
    number of pose rows."""

    id: int
    duration_s: float
    fps: float
    name: str
    poses: int


class GhostHost(Protocol):
    """The player's I/O (implemented by :mod:`climbd.ghost.live` for a data channel)."""

    @property
    def is_open(self) -> bool:
        """False once the viewer has gone (the player then ends)."""
        ...

    async def session(self, session_id: int) -> GhostSession:
        """The session's record. Raises SessionNotFound."""
        ...

    async def poses(self, session_id: int, start: float, end: float | None) -> PoseSeries:
        """Rows with ``start <= t < end`` (``end`` None = to the end). Raises StorageError."""
        ...

    def send(self, data: str | bytes) -> bool:
        """Send one message now; False if it could not be sent."""
        ...

    def backlog(self) -> int:
        """Bytes queued for the viewer and not yet sent."""
        ...

    def stamp(self, clock_time: float) -> tuple[int, bool]:
        """The viewer's live-video timestamp of a frame captured at ``clock_time``:
        ``(RTP timestamp, True)``, ``(pts mod 2**32, False)`` without RTP, or ``(0, False)``."""
        ...

    def recording_start(self) -> tuple[int, float] | None:
        """``(session id, clock time of its first frame)`` of the running recording, or
        None when nothing records."""
        ...

    async def attempts(self, session_id: int) -> list[tuple[float, float | None]]:
        """The session's attempts in time order as ``(start_s, end_s)``, seconds from the
        session's start (``end_s`` None: the attempt runs to the session's end).

        Raises:
            SessionNotFound, StorageError.
        """
        ...

    def liftoff_after(self, clock_time: float) -> float | None:
        """The capture time (s, the player's clock) of the earliest live lift-off captured
        at or after ``clock_time`` that the live attempt detector has reported so far, or
        None (none yet, or no detector)."""
        ...

    def liftoff_unavailable(self) -> str:
        """Why no live lift-off can be seen (live pose off or failed), or "" when the live
        attempt detector runs."""
        ...


#: Seconds of rows loaded at a time.
WINDOW_S = 10.0
#: A ghost_state message is repeated this often while a ghost is loaded, seconds.
STATE_INTERVAL_S = 1.0
#: How often an armed player looks for a recording start or a live lift-off, seconds.
ARM_POLL_S = 0.02
#: Rows are dropped (not queued) while more than this many bytes wait to be sent.
MAX_BACKLOG = 32 * 1024
#: Queued control messages at most (a flood is answered with errors, never queued forever).
MAX_QUEUED_CONTROLS = 32
#: Error replies per second at most.
ERRORS_PER_S = 5.0


@dataclass(slots=True)
class Race:
    """An ``arm`` at lift-off: which ghost attempt races the live climber, and its progress.

    Attributes:
        attempt: the attempt's index in the ghost session (0-based).
        start_s, end_s: its lift-off and landing, session seconds (``end_s`` None: it runs to
            the session's end).
        repeat: wait for the next lift-off again after each race.
        since: lift-offs captured at or after this clock time (s) start a race (the arm
            time, then just after the lift-off last raced).
        liftoff: capture time (s) of the live lift-off being raced; None while waiting.
        races: how many races started.
        done: the last race reached ``end_s`` (and did not re-arm).
    """

    attempt: int
    start_s: float
    end_s: float | None
    repeat: bool
    since: float
    liftoff: float | None = None
    races: int = 0
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``race`` field of ``ghost_state``."""
        return {"attempt": self.attempt, "start_s": round(self.start_s, 4),
                "end_s": None if self.end_s is None else round(self.end_s, 4),
                "repeat": self.repeat, "liftoff_at": self.liftoff, "races": self.races}


class GhostPlayer:
    """Plays ghosts to one viewer (see the module docstring).

    Args:
        host: the viewer's I/O.
        clock: monotonic seconds (must be the clock of the host's ``stamp``,
            ``recording_start`` and ``liftoff_after``).
        window_s: seconds of rows loaded at a time.

    Attributes:
        sent: ghost pose messages sent; dropped: rows not sent because the viewer's link
            was backed up; errors: control messages refused.
        timing: the last 2000 sent rows as ``(frame, t, due, sent_at)`` (clock seconds), for
            diagnostics and tests.
    """

    def __init__(self, host: GhostHost, clock: Callable[[], float] = time.monotonic,
                 window_s: float = WINDOW_S):
        self.host = host
        self.clock = clock
        self.window_s = window_s
        self.session: GhostSession | None = None
        self.pacer: GhostPacer | None = None
        self.armed = False
        #: the lift-off race, when armed at lift-off
        self.race: Race | None = None
        self.aligned_to: int | None = None
        self.seq: int | None = None
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.timing: deque[tuple[int, float, float, float]] = deque(maxlen=2000)
        self._queue: deque[GhostControl] = deque()
        self._max_seq: int | None = None
        self._state_due = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_state_at = -math.inf
        self._last_state: str | None = None
        self._error_bucket = TokenBucket(ERRORS_PER_S, ERRORS_PER_S, clock())

    @property
    def arm_at(self) -> str | None:
        """How the ghost waits or plays: "lift-off" (a race, waiting or running),
        "recording" (armed for the next recording), else None."""
        if self.race is not None:
            return "lift-off"
        return "recording" if self.armed else None

    # -- control (synchronous entry point) ---------------------------------------------------
    def control(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Validate a client control message and queue it; returns an error reply (or None).

        Never raises: anything malformed becomes ``{"type": "error", ...}``.
        """
        raw_seq = message.get("seq")
        seq = raw_seq if isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else None
        try:
            ctl = GhostControl.model_validate(message)
            self._check_fields(ctl)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}"
                                 for e in exc.errors())
            return self.error("ghost-invalid", f"bad ghost control: {problems}", seq)
        except ValueError as exc:
            return self.error("ghost-invalid", str(exc), seq)
        if self._closed:
            return self.error("ghost-closed", "this viewer's ghost player has ended", seq)
        if ctl.seq is not None and self._max_seq is not None and ctl.seq <= self._max_seq:
            self._state_due = True  # a re-sent control whose answer was lost: answer again
            self._wake.set()
            return None
        if ctl.seq is not None:
            self._max_seq = ctl.seq
        if len(self._queue) >= MAX_QUEUED_CONTROLS:
            return self.error("ghost-busy", "too many ghost controls at once", seq)
        self._queue.append(ctl)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ghost-player")
        return None

    @staticmethod
    def _check_fields(ctl: GhostControl) -> None:
        needs = {"seek": "t", "speed": "speed", "loop": "loop", "arm": "session_id"}
        field = needs.get(ctl.action)
        if field is not None and getattr(ctl, field) is None:
            raise ValueError(f'ghost action "{ctl.action}" needs "{field}"')
        if ctl.at is not None and ctl.action != "arm":
            raise ValueError('"at" goes with the ghost action "arm" only')
        for name in ("attempt", "repeat"):
            if getattr(ctl, name) is not None and ctl.at != "lift-off":
                raise ValueError(f'"{name}" goes with "action": "arm", "at": "lift-off" only')
        if ctl.speed is not None:
            check_speed(ctl.speed)

    def error(self, code: str, text: str, seq: int | None = None) -> dict[str, Any] | None:
        """An error reply, or None when error replies are being rate limited."""
        self.errors += 1
        if not self._error_bucket.take(self.clock()):
            return None
        return {"type": "error", "code": code, "error": text, "seq": seq}

    def close(self) -> None:
        """Stop playing (idempotent)."""
        self._closed = True
        self._wake.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait for the player task to end."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while not self._closed and self.host.is_open:
                while self._queue:
                    ctl = self._queue.popleft()
                    await self._apply(ctl)
                    self.seq = ctl.seq if ctl.seq is not None else self.seq
                    self._send_state(force=True)
                if self._state_due:
                    self._state_due = False
                    self._send_state(force=True)
                timeout = await self._tick()
                if self._queue or timeout <= 0:
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not take the viewer's channel down with it
            log.exception("ghost player failed")
            self._send_json({"type": "error", "code": "ghost-failed",
                             "error": "the ghost player failed (see the daemon log)",
                             "seq": self.seq})
        finally:
            self._closed = True

    async def _tick(self) -> float:
        """Send what is due; returns seconds until the next thing to do (0 = at once)."""
        p = self.pacer
        if p is None:
            return STATE_INTERVAL_S
        now = self.clock()
        r = self.race
        if self.armed and r is not None:
            liftoff = self.host.liftoff_after(r.since)
            if liftoff is None:
                self._send_state()
                return ARM_POLL_S
            self._start_race(r, liftoff)
        elif self.armed:
            started = self.host.recording_start()
            if started is None:
                self._send_state()
                return ARM_POLL_S
            self.armed = False
            self.aligned_to = started[0]
            p.start_at(started[1], 0.0)
            self._send_state(force=True)
        elif r is not None and r.repeat and r.liftoff is not None:
            newer = self.host.liftoff_after(r.since)  # a new live attempt during the race
            if newer is not None:
                self._start_race(r, newer)
        if r is not None and r.liftoff is not None and not self.armed and not r.done:
            end = r.end_s if r.end_s is not None else p.duration
            if p.position(now) >= end:
                await self._end_race(r, end)
                return 0.0
        need = p.missing()
        if need is not None:
            await self._load(need)
            return 0.0
        d = p.pop_due(now)
        if d is not None:
            self._send_row(d, now)
        self._send_state()
        if p.missing() is not None:  # that was the window's last row: load the next now
            return 0.0
        cap = STATE_INTERVAL_S
        if r is not None and r.liftoff is not None and not r.done:
            end = r.end_s if r.end_s is not None else p.duration
            cap = (end - p.position()) / p.speed + 0.001  # wake at the race's end
            if r.repeat:
                cap = min(cap, ARM_POLL_S)  # and look for the next lift-off meanwhile
            cap = max(0.0, min(cap, STATE_INTERVAL_S))
        nxt = p.next_due()
        if nxt is None:
            if p.state() == "playing":  # past the last row: wake at the end to say "ended"
                return min(cap, (p.duration - p.position()) / p.speed + 0.001)
            return cap
        return max(0.0, min(nxt.due - self.clock(), cap))

    def _start_race(self, r: Race, liftoff: float) -> None:
        """Anchor the ghost attempt's lift-off on the live one (capture time ``liftoff``, s;
        about 1 s ago: :meth:`GhostPacer.start_at` passes over the rows already due)."""
        p = self.pacer
        assert p is not None
        self.armed = False
        r.liftoff = liftoff
        r.since = math.nextafter(liftoff, math.inf)
        r.races += 1
        r.done = False
        p.start_at(liftoff, r.start_s)
        self._send_state(force=True)

    async def _end_race(self, r: Race, end: float) -> None:
        """The ghost attempt has landed: hold it there (``ended``) or, with ``repeat``, go back
        to its lift-off and wait for the next live one."""
        p = self.pacer
        assert p is not None
        now = self.clock()
        p.pause(now)
        if r.repeat:
            self.armed = True
            r.liftoff = None
            p.seek(r.start_s, now)
        else:
            r.done = True
            p.seek(min(end, p.duration), now)
        await self._ensure_loaded()
        self._send_still()
        self._send_state(force=True)

    async def _load(self, start: float) -> None:
        assert self.pacer is not None and self.session is not None
        end = start + self.window_s
        if end >= self.session.duration_s:
            end = math.inf
        try:
            series = await self.host.poses(self.session.id, start,
                                           None if math.isinf(end) else end)
        except SessionNotFound:
            self._fail("ghost-not-found", f"session {self.session.id} no longer exists")
            return
        except StorageError as exc:
            self._fail("ghost-storage", f"cannot read the poses of session "
                                        f"{self.session.id}: {exc}")
            return
        if self.pacer is not None:
            self.pacer.load(series, start, end)

    def _fail(self, code: str, text: str) -> None:
        self.pacer = None
        self.session = None
        self._disarm()
        self._send_json({"type": "error", "code": code, "error": text, "seq": self.seq})
        self._send_state(force=True)

    def _send_row(self, d: Due, now: float, still: bool = False) -> None:
        p = self.pacer
        assert p is not None
        if self.host.backlog() > MAX_BACKLOG:
            self.dropped += 1
            return
        ts, rtp = self.host.stamp(now if still else d.due)
        msg = pack_ghost(p.series.image[d.index], timestamp=ts, rtp=rtp, t=d.t,
                         frame=d.frame, still=still)
        if self.host.send(msg):
            self.sent += 1
            self.timing.append((d.frame, d.t, d.due, self.clock()))

    def _send_still(self) -> None:
        """Show the pose at the current position now (after a seek or a pause)."""
        p = self.pacer
        if p is None:
            return
        now = self.clock()
        d = p.current(now)
        if d is not None:
            self._send_row(d, now, still=True)
        else:
            ts, rtp = self.host.stamp(now)
            self.host.send(pack_ghost(None, timestamp=ts, rtp=rtp, t=p.position(now), frame=0,
                                      still=True))

    def _send_json(self, data: dict[str, Any]) -> None:
        import json

        self.host.send(json.dumps(data, separators=(",", ":")))

    def state(self) -> dict[str, Any]:
        """The ``ghost_state`` message now."""
        p, s = self.pacer, self.session
        if p is None or s is None:
            return {"type": "ghost_state", "state": "stopped", "session_id": None,
                    "seq": self.seq}
        now = self.clock()
        if self.armed:
            state = "armed"
        elif self.race is not None and self.race.done:
            state = "ended"
        else:
            state = p.state(now)
        return {
            "type": "ghost_state",
            "state": state,
            "session_id": s.id,
            "name": s.name,
            "t": round(p.position(now), 4),
            "duration": round(s.duration_s, 4),
            "fps": s.fps,
            "speed": p.speed,
            "loop": p.loop,
            "aligned_to": self.aligned_to,
            "arm_at": self.arm_at,
            "race": None if self.race is None else self.race.to_dict(),
            "seq": self.seq,
        }

    def _send_state(self, force: bool = False) -> None:
        now = self.clock()
        state = self.state()
        if (force or state["state"] != self._last_state
                or now - self._last_state_at >= STATE_INTERVAL_S):
            self._last_state_at = now
            self._last_state = state["state"]
            self._send_json(state)

    # -- applying controls -------------------------------------------------------------------
    async def _apply(self, ctl: GhostControl) -> None:
        now = self.clock()
        try:
            if ctl.action == "state":
                return
            if ctl.action == "stop":
                self.pacer, self.session = None, None
                self._disarm()
                return
            race = None
            if ctl.action == "arm" and ctl.at == "lift-off":
                assert ctl.session_id is not None  # _check_fields
                race = await self._race(ctl.session_id, ctl.attempt or 0, bool(ctl.repeat), now)
            if ctl.session_id is not None and (
                    self.session is None or ctl.session_id != self.session.id
                    or ctl.action == "arm"):
                await self._open(ctl.session_id)
            p = self.pacer
            if p is None:
                raise ValueError(f'ghost action "{ctl.action}" needs a "session_id" (no ghost '
                                 "is loaded)")
            if ctl.action == "arm":
                self.armed = True
                self.race = race
                self.aligned_to = None
                p.pause(now)
                if ctl.speed is not None:
                    p.set_speed(ctl.speed, now)
                if race is not None:
                    p.set_loop(False, now)  # a race does not loop (``repeat`` re-arms)
                    p.seek(min(race.start_s, p.duration), now)
                    await self._ensure_loaded()
                    self._send_still()  # the ghost waits in its lift-off pose
                    return
                p.seek(0.0, now)
                if ctl.loop is not None:
                    p.set_loop(ctl.loop, now)
                return
            if ctl.action != "speed":  # a speed change keeps an arm (and a race) going
                self._disarm()
            if ctl.speed is not None:
                p.set_speed(ctl.speed, now)
            if ctl.loop is not None:
                p.set_loop(ctl.loop, now)
            if ctl.t is not None:
                if ctl.t > p.duration:
                    raise ValueError(f"seek to {ctl.t:g} s is past the end of session "
                                     f"{self.session.id if self.session else '?'} "
                                     f"({p.duration:.2f} s)")
                p.seek(ctl.t, now)
            if ctl.action == "play":
                p.play(now)
            elif ctl.action == "pause":
                p.pause(now)
            if not p.playing or ctl.action == "seek":
                await self._ensure_loaded()
                self._send_still()
        except SessionNotFound as exc:
            self._reply_error("ghost-not-found", f"cannot play the ghost: {exc}", ctl.seq)
        except GhostError as exc:
            self._reply_error(exc.code, str(exc), ctl.seq)
        except ValueError as exc:
            self._reply_error("ghost-invalid", str(exc), ctl.seq)
        except StorageError as exc:
            self._reply_error("ghost-storage", f"cannot play the ghost: {exc}", ctl.seq)

    def _disarm(self) -> None:
        self.armed = False
        self.race = None

    async def _race(self, session_id: int, index: int, repeat: bool, now: float) -> Race:
        """The race of attempt ``index`` of the session, armed at clock time ``now`` (s).

        Raises:
            NoLiftoff: no live lift-off can be seen. NoAttempt: the session has no such
            attempt. SessionNotFound, StorageError.
        """
        why = self.host.liftoff_unavailable()
        if why:
            raise NoLiftoff(f"the ghost cannot start at lift-off: {why}")
        found = await self.host.attempts(session_id)
        if not found:
            raise NoAttempt(f"session {session_id} has no attempt to race: nobody leaves the "
                            "ground in it")
        if index >= len(found):
            raise NoAttempt(f"session {session_id} has {len(found)} attempt"
                            f"{'s' if len(found) != 1 else ''} (0 to {len(found) - 1}), "
                            f"not attempt {index}")
        start_s, end_s = found[index]
        return Race(index, max(0.0, float(start_s)), None if end_s is None else float(end_s),
                    repeat, now)

    def _reply_error(self, code: str, text: str, seq: int | None) -> None:
        reply = self.error(code, text, seq)
        if reply is not None:
            self._send_json(reply)

    async def _ensure_loaded(self) -> None:
        p = self.pacer
        if p is None:
            return
        t = p.position()
        if not p._in_window(t):
            await self._load(t)

    async def _open(self, session_id: int) -> None:
        """Load a session's record and a fresh pacer (paused at 0, keeping speed and loop).

        Raises:
            SessionNotFound: no such session. ValueError: it has no pose at all.
        """
        s = await self.host.session(session_id)
        if s.poses <= 0:
            raise ValueError(f"session {session_id} has no pose to replay as a ghost")
        old = self.pacer
        pacer = GhostPacer(s.duration_s, self.clock, speed=old.speed if old else 1.0,
                           loop=old.loop if old else False)
        end = self.window_s if self.window_s < s.duration_s else math.inf
        first = await self.host.poses(s.id, 0.0, None if math.isinf(end) else end)
        pacer.load(first, 0.0, end)
        self.session, self.pacer, self.aligned_to = s, pacer, None

    def stats(self) -> dict[str, Any]:
        """Counters and pacing accuracy (``late_ms``: sent minus due, p50/p95/max)."""
        late = sorted((sent - due) * 1000 for _f, _t, due, sent in self.timing)

        def pct(q: float) -> float | None:
            return round(late[min(len(late) - 1, int(q * len(late)))], 2) if late else None

        return {
            "state": self.state(),
            "sent": self.sent,
            "dropped": self.dropped,
            "skipped": self.pacer.skipped if self.pacer else 0,
            "errors": self.errors,
            "late_ms": {"p50": pct(0.5), "p95": pct(0.95),
                        "max": round(late[-1], 2) if late else None},
        }
