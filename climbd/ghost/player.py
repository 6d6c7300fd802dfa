"""Ghost replay: a recorded session's skeleton, paced by its recorded timestamps.

The original design replayed a session with ``sleep(0.033)`` between frames, so a 25 fps
recording played 20 % fast and any jitter accumulated. Here every pose row is due at the
clock time its *recorded* timestamp maps to::

    due(row) = anchor_clock + (lap * duration + row.t - anchor_position) / speed

where ``(anchor_clock, anchor_position)`` is re-set by every play, pause, seek and speed
change, so pacing never drifts however long the ghost plays.

Two layers:

- :class:`GhostPacer` — pure (no I/O, no asyncio): a media timeline over a clock with
  play / pause / seek / speed / loop, and the rows of a :class:`PoseSeries` window that fall
  due. Tested with a fake clock.
- :class:`GhostPlayer` — async: drives one pacer for one viewer. Its I/O goes through a
  :class:`GhostHost` (load a session's poses by time window, send a message, map a clock time
  to the viewer's live video timestamp), so it knows nothing of HTTP, SQLite or WebRTC;
  :mod:`climbd.ghost.live` plugs it into a viewer's ``landmarks`` data channel.

Wire format of a ghost pose (binary, little-endian, same 16-byte header shape and landmark
body as a live pose, :mod:`climbd.streaming.landmarks`, so one decoder serves both)::

    offset size  field
    0      1     kind        0x02 = ghost pose v1 (live poses are 0x01)
    1      1     flags       bit 0 detected (landmarks follow); bit 1 ``timestamp`` is an RTP
                             timestamp of this viewer's live video; bit 2 "still": draw now
                             (paused, or a preview after a seek), do not match to a frame
    2      2     count       landmarks that follow (33, or 0)
    4      4     timestamp   u32: the live frame this ghost pose belongs with: RTP timestamp
                             (bit 1) or the live ``pts`` (90 kHz) modulo 2**32
    8      4     t_ms        u32: the ghost row's session time, milliseconds
    12     4     frame       u32: the ghost row's session frame index
    16     8*n   landmarks   n x (x i16, y i16, z i16, visibility u8, presence u8), x/y/z
                             scaled by 10 000 (``hello.scale``)

A ghost pose of 33 landmarks is 280 bytes: at 30 fps, 8.4 kB/s per viewer.

Control messages (JSON text, client → server; ``seq`` optional, echoed)::

    {"type": "ghost", "action": "play", "session_id": 12, "t": 0.0, "speed": 1.0}
    {"type": "ghost", "action": "pause" | "stop" | "state"}
    {"type": "ghost", "action": "seek", "t": 3.2}
    {"type": "ghost", "action": "speed", "speed": 0.5}          0.1 ≤ speed ≤ 2
    {"type": "ghost", "action": "loop", "loop": true}
    {"type": "ghost", "action": "arm", "session_id": 12}        start with the next recording

``arm`` is how a ghost starts "at the press of record": the ghost waits at 0 and, as soon as
a recording runs, is anchored on that recording's first frame (its capture time, which may
lie in the pre-roll), so ghost time = new session time for every live frame.

Server → client: ``ghost_state`` (after every control and every second while a ghost is
loaded: the data channel is lossy, so state is repeated rather than acknowledged once) and
``error`` ``{"code", "error", "seq"}`` for a control that cannot be applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from climbd.errors import SessionNotFound, StorageError
from climbd.security.ratelimit import TokenBucket
from climbd.storage.posecodec import PoseSeries
from climbd.streaming.landmarks import encode_landmarks

__all__ = [
    "FLAG_DETECTED",
    "FLAG_RTP",
    "FLAG_STILL",
    "GHOST_HEADER",
    "KIND_GHOST",
    "MAX_SPEED",
    "MIN_SPEED",
    "Due",
    "GhostControl",
    "GhostHost",
    "GhostMessage",
    "GhostPacer",
    "GhostPlayer",
    "GhostSession",
    "decode_ghost",
    "pack_ghost",
]

log = logging.getLogger(__name__)

#: Slowest and fastest ghost speed (the replay page uses the same range).
MIN_SPEED = 0.1
MAX_SPEED = 2.0
#: First byte of a ghost pose message.
KIND_GHOST = 0x02
FLAG_DETECTED = 0x01
FLAG_RTP = 0x02
FLAG_STILL = 0x04
#: kind, flags, count, timestamp, t_ms, frame.
GHOST_HEADER = struct.Struct("<BBHIII")
_U32 = 0xFFFFFFFF
_CLOCK_RATE = 90_000


def check_speed(speed: float) -> float:
    """``speed`` as a float if ``MIN_SPEED <= speed <= MAX_SPEED``.

    Raises:
        ValueError: outside that range, or not finite.
    """
    s = float(speed)
    if not math.isfinite(s) or not MIN_SPEED <= s <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed!r}")
    return s


# -- the pure pacing core ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """A pose row and the clock time it is due.

    Attributes:
        due: clock time (seconds, the pacer's clock) at which the row is to be shown.
        index: the row's index in the pacer's loaded :attr:`GhostPacer.series`.
        frame: the row's session frame index.
        t: the row's session time, seconds.
        lap: 0 on the first pass, +1 for every loop.
    """

    due: float
    index: int
    frame: int
    t: float
    lap: int


class GhostPacer:
    """A session's media timeline over a clock, and the pose rows it makes due (pure).

    The pacer holds one *window* of rows (a :class:`PoseSeries` of every row with
    ``start <= t < end``, loaded with :meth:`load`); :meth:`missing` says which session time
    must be loaded next, so a long session is never held in memory whole.

    Args:
        duration_s: the session's duration, seconds (the loop point; ≥ 0).
        clock: returns the current time in seconds (``time.monotonic`` in the daemon).
        speed: initial speed, ``MIN_SPEED``..``MAX_SPEED``.
        loop: start again from 0 at the end.

    Raises:
        ValueError: a negative or non-finite duration, or a bad speed.

    Positions are session seconds. Internally the position is *unwrapped* (it keeps growing
    across loops: ``lap * duration + t``), so every lap's due times follow from one anchor.
    """

    def __init__(self, duration_s: float, clock: Callable[[], float], *, speed: float = 1.0,
                 loop: bool = False):
        if not math.isfinite(duration_s) or duration_s < 0:
            raise ValueError(f"duration must be a finite number >= 0, got {duration_s!r}")
        self.duration = float(duration_s)
        self._clock = clock
        self.speed = check_speed(speed)
        self.loop = bool(loop)
        self.playing = False
        self._anchor_clock = clock()
        self._anchor_u = 0.0
        self._cursor_u = 0.0  # rows at unwrapped positions >= this are still to be emitted
        self.series = PoseSeries.empty()
        self.window: tuple[float, float] = (0.0, 0.0)
        #: rows passed over because a newer row was already due (a late clock tick)
        self.skipped = 0

    # -- timeline ----------------------------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _looping(self) -> bool:
        return self.loop and self.duration > 0

    def _u(self, now: float) -> float:
        u = self._anchor_u
        if self.playing:
            u += (now - self._anchor_clock) * self.speed
        return u if self._looping() else min(u, self.duration)

    def _split(self, u: float) -> tuple[int, float]:
        """(lap, session time) of an unwrapped position."""
        if not self._looping():
            return 0, u
        lap = math.floor(u / self.duration)
        return lap, u - lap * self.duration

    def _anchor(self, now: float) -> None:
        self._anchor_u = self._u(now)
        self._anchor_clock = now

    def position(self, now: float | None = None) -> float:
        """The session time shown at clock time ``now`` (default: the clock), seconds."""
        return self._split(self._u(self._now(now)))[1]

    def ended(self, now: float | None = None) -> bool:
        """True when not looping and the position reached the end."""
        return not self._looping() and self._u(self._now(now)) >= self.duration

    def state(self, now: float | None = None) -> Literal["playing", "paused", "ended"]:
        """``playing``, ``paused`` or ``ended``."""
        if self.ended(now):
            return "ended"
        return "playing" if self.playing else "paused"

    def play(self, now: float | None = None) -> None:
        """Play from the current position (from 0 if it had ended)."""
        now = self._now(now)
        if self.ended(now):
            self.seek(0.0, now)
        self._anchor(now)
        self.playing = True

    def pause(self, now: float | None = None) -> None:
        """Freeze the position."""
        now = self._now(now)
        self._anchor(now)
        self.playing = False

    def seek(self, t: float, now: float | None = None) -> None:
        """Move to session time ``t`` (seconds); the next row emitted is the first at ``t``
        or later.

        Raises:
            ValueError: ``t`` is negative, past the end, or not finite.
        """
        if not math.isfinite(t) or t < 0 or t > self.duration:
            raise ValueError(f"seek to {t!r} s is outside the session (0 to "
                             f"{self.duration:.3f} s)")
        self._anchor_clock = self._now(now)
        self._anchor_u = self._cursor_u = float(t)

    def start_at(self, clock_time: float, t: float = 0.0) -> None:
        """Play so that session time ``t`` is (or was) shown at ``clock_time``.

        ``clock_time`` may lie in the past (a recording that started in its pre-roll): rows
        already due are then passed over and the next :meth:`pop_due` returns the current one.

        Raises:
            ValueError: as :meth:`seek`.
        """
        self.seek(t, clock_time)
        self.playing = True

    def set_speed(self, speed: float, now: float | None = None) -> None:
        """Change the speed from now on (the position does not jump).

        Raises:
            ValueError: outside ``MIN_SPEED``..``MAX_SPEED``.
        """
        s = check_speed(speed)
        self._anchor(self._now(now))
        self.speed = s

    def set_loop(self, loop: bool, now: float | None = None) -> None:
        """Turn looping on or off (the position does not jump)."""
        now = self._now(now)
        self._anchor(now)
        if not loop and self._looping():
            lap, t = self._split(self._anchor_u)
            self._anchor_u = t
            self._cursor_u = max(0.0, self._cursor_u - lap * self.duration)
        self.loop = bool(loop)

    # -- rows --------------------------------------------------------------------------------
    def load(self, series: PoseSeries, start: float, end: float) -> None:
        """Hold the rows of session times ``start <= t < end`` (``end`` may be ``inf``).

        Raises:
            ValueError: ``end < start``, or a row of ``series`` lies outside the range.
        """
        if end < start:
            raise ValueError(f"window end {end} is before its start {start}")
        if len(series) and (series.times[0] < start or series.times[-1] >= end):
            raise ValueError("the rows do not lie inside the window they are loaded as")
        self.series = series
        self.window = (float(start), float(end))

    def _in_window(self, t: float) -> bool:
        lo, hi = self.window
        return lo <= t < hi

    def missing(self) -> float | None:
        """The session time from which rows must be :meth:`load`-ed before the next row can
        be found, or None when the loaded window suffices (or nothing is left to play).

        When the window holds no row after the cursor, the cursor moves to the window's end
        (or to the start of the next lap): no row lies in between.
        """
        if self.duration <= 0:
            return None
        lap, t0 = self._split(self._cursor_u)
        lo, hi = self.window
        if t0 >= self.duration and not self._looping():
            return None
        if not self._in_window(t0):
            return t0
        i = int(np.searchsorted(self.series.times, t0, side="left"))
        if i < len(self.series):
            return None
        # No row left in this window: there is none between the cursor and the window's
        # end, so the cursor moves there (or to the next lap) and that is what is missing.
        if hi < self.duration:
            self._cursor_u = lap * self.duration + hi
            return hi
        if self._looping() and lo > 0:
            self._cursor_u = (lap + 1) * self.duration
            return 0.0
        return None

    def next_due(self) -> Due | None:
        """The next row to emit and its due time, or None (paused, ended, or rows missing)."""
        if not self.playing:
            return None
        lap, t0 = self._split(self._cursor_u)
        if not self._in_window(t0):
            return None
        n = len(self.series)
        i = int(np.searchsorted(self.series.times, t0, side="left"))
        if i >= n:
            lo, hi = self.window
            if not (self._looping() and hi >= self.duration and lo <= 0 and n):
                return None
            lap, i = lap + 1, 0
        t = float(self.series.times[i])
        u = lap * self.duration + t
        due = self._anchor_clock + (u - self._anchor_u) / self.speed
        return Due(due, i, int(self.series.frames[i]), t, lap)

    def take(self, due: Due) -> None:
        """Mark ``due`` (from :meth:`next_due`) as emitted."""
        u = due.lap * self.duration + due.t
        self._cursor_u = float(np.nextafter(u, math.inf))

    def pop_due(self, now: float | None = None) -> Due | None:
        """The newest row due at ``now`` (default: the clock), or None if none is due yet.

        Older rows that are also due are passed over (counted in :attr:`skipped`): a late
        tick shows the pose of *now*, it does not fast-forward through the missed ones.
        """
        now = self._now(now)
        last: Due | None = None
        while (d := self.next_due()) is not None and d.due <= now:
            if last is not None:
                self.skipped += 1
            self.take(d)
            last = d
        return last

    def current(self, now: float | None = None, hold_s: float = 0.25) -> Due | None:
        """The row shown at ``now`` (the latest at or before the position, at most ``hold_s``
        session seconds older), due now; None if there is none in the loaded window."""
        now = self._now(now)
        lap, t = self._split(self._u(now))
        i = int(np.searchsorted(self.series.times, t, side="right")) - 1
        if i < 0 or t - float(self.series.times[i]) > hold_s:
            return None
        return Due(now, i, int(self.series.frames[i]), float(self.series.times[i]), lap)


# -- messages ------------------------------------------------------------------------------


def pack_ghost(image: np.ndarray | None, *, timestamp: int, rtp: bool, t: float, frame: int,
               still: bool = False) -> bytes:
    """One binary ghost message (see the module docstring).

    Args:
        image: ``(33, 5)`` image landmarks of the row, or None (nothing to draw).
        timestamp: the live frame's RTP timestamp (``rtp=True``) or live pts (90 kHz).
        t: the row's session time, seconds (sent in milliseconds); frame: its frame index.
        still: draw at once (paused or seek preview), not when the matching frame shows.
    """
    body = b"" if image is None else encode_landmarks(image)
    flags = (FLAG_DETECTED if body else 0) | (FLAG_RTP if rtp else 0) | (
        FLAG_STILL if still else 0)
    count = 0 if image is None else len(image)
    t_ms = min(max(round(t * 1000), 0), _U32)
    return GHOST_HEADER.pack(KIND_GHOST, flags, count, timestamp & _U32, t_ms,
                             frame & _U32) + body


@dataclass(frozen=True, slots=True)
class GhostMessage:
    """A decoded ghost message (tests, Python clients); ``landmarks`` ``(n, 5)`` or None."""

    timestamp: int
    rtp: bool
    still: bool
    t: float
    frame: int
    landmarks: np.ndarray | None


def decode_ghost(data: bytes) -> GhostMessage:
    """Decode a binary ghost message.

    Raises:
        ValueError: not a ghost message, or its length does not match its count.
    """
    from climbd.streaming.landmarks import COORD_SCALE

    if len(data) < GHOST_HEADER.size or data[0] != KIND_GHOST:
        raise ValueError("not a ghost message")
    _kind, flags, count, ts, t_ms, frame = GHOST_HEADER.unpack_from(data)
    if len(data) != GHOST_HEADER.size + 8 * count:
        raise ValueError(f"ghost message of {len(data)} bytes does not hold {count} points")
    landmarks = None
    if flags & FLAG_DETECTED:
        raw = np.frombuffer(data, np.dtype([("x", "<i2"), ("y", "<i2"), ("z", "<i2"),
                                            ("v", "u1"), ("p", "u1")]), count,
                            GHOST_HEADER.size)
        landmarks = np.empty((count, 5), np.float32)
        for i, name in enumerate("xyz"):
            landmarks[:, i] = raw[name] / COORD_SCALE
        for i, name in ((3, "v"), (4, "p")):
            landmarks[:, i] = np.where(raw[name] == 255, np.nan, raw[name] / 254)
    return GhostMessage(ts, bool(flags & FLAG_RTP), bool(flags & FLAG_STILL), t_ms / 1000,
                        frame, landmarks)


class GhostControl(BaseModel):
    """A client's ghost control message (see the module docstring); unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["ghost"]
    action: Literal["play", "pause", "seek", "speed", "loop", "stop", "arm", "state"]
    session_id: int | None = Field(None, ge=1, le=2**53)
    t: float | None = Field(None, ge=0, allow_inf_nan=False)
    speed: float | None = Field(None, allow_inf_nan=False)
    loop: bool | None = None
    seq: int | None = Field(None, ge=0, le=2**53)


# -- the async player ----------------------------------------------------------------------


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


#: Seconds of rows loaded at a time.
WINDOW_S = 10.0
#: A ghost_state message is repeated this often while a ghost is loaded, seconds.
STATE_INTERVAL_S = 1.0
#: How often an armed player looks for a recording start, seconds.
ARM_POLL_S = 0.02
#: Rows are dropped (not queued) while more than this many bytes wait to be sent.
MAX_BACKLOG = 32 * 1024
#: Queued control messages at most (a flood is answered with errors, never queued forever).
MAX_QUEUED_CONTROLS = 32
#: Error replies per second at most.
ERRORS_PER_S = 5.0


class GhostPlayer:
    """Plays ghosts to one viewer (see the module docstring).

    Args:
        host: the viewer's I/O.
        clock: monotonic seconds (must be the clock of the host's ``stamp`` and
            ``recording_start``).
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
        if self.armed:
            started = self.host.recording_start()
            if started is None:
                self._send_state()
                return ARM_POLL_S
            self.armed = False
            self.aligned_to = started[0]
            p.start_at(started[1], 0.0)
            self._send_state(force=True)
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
        nxt = p.next_due()
        if nxt is None:
            if p.state() == "playing":  # past the last row: wake at the end to say "ended"
                return min(STATE_INTERVAL_S, (p.duration - p.position()) / p.speed + 0.001)
            return STATE_INTERVAL_S
        return max(0.0, min(nxt.due - self.clock(), STATE_INTERVAL_S))

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
        self.armed = False
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
        return {
            "type": "ghost_state",
            "state": "armed" if self.armed else p.state(now),
            "session_id": s.id,
            "name": s.name,
            "t": round(p.position(now), 4),
            "duration": round(s.duration_s, 4),
            "fps": s.fps,
            "speed": p.speed,
            "loop": p.loop,
            "aligned_to": self.aligned_to,
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
                self.pacer, self.session, self.armed = None, None, False
                return
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
                self.aligned_to = None
                p.pause(now)
                p.seek(0.0, now)
                if ctl.speed is not None:
                    p.set_speed(ctl.speed, now)
                if ctl.loop is not None:
                    p.set_loop(ctl.loop, now)
                return
            self.armed = False
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
        except ValueError as exc:
            self._reply_error("ghost-invalid", str(exc), ctl.seq)
        except StorageError as exc:
            self._reply_error("ghost-storage", f"cannot play the ghost: {exc}", ctl.seq)

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
