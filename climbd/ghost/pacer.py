"""Ghost pacing (pure: no I/O, no asyncio, no clock of its own).

The original design replayed a session with ``sleep(0.033)`` between frames, so a 25 fps
recording played 20 % fast and any jitter accumulated. Here every pose row is due at the
clock time its *recorded* timestamp maps to::

    due(row) = anchor_clock + (lap * duration + row.t - anchor_position) / speed

where ``(anchor_clock, anchor_position)`` is re-set by every play, pause, seek and speed
change, so pacing never drifts however long the ghost plays.

:class:`GhostPacer` is a media timeline over a clock with play / pause / seek / speed / loop,
and the rows of a :class:`~climbd.storage.posecodec.PoseSeries` window that fall due. Tested
with a fake clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from climbd.storage.posecodec import PoseSeries

__all__ = ["MAX_SPEED", "MIN_SPEED", "Due", "GhostPacer", "check_speed"]

#: Slowest and fastest ghost speed (the replay page uses the same range).
MIN_SPEED = 0.1
MAX_SPEED = 2.0


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
