"""Attempt detection from BlazePose image landmarks: an incremental state machine.

An *attempt* runs from the moment the climber's last foot leaves the ground to the moment a
foot is back on it (PRODUCT.md). The detector sees only the pose — no depth sensor, no wall
model — so "the ground" is estimated from the pose itself, in image coordinates.

Method
======

Every frame is reduced to a few numbers, in units of the frame *height* (``x`` is rescaled by
the aspect ratio so distances are isotropic; ``y`` grows downwards):

- ``foot``: the lowest foot point (largest ``y`` of ankle, heel and foot-index landmarks with
  visibility >= :attr:`DetectorParams.min_foot_visibility`);
- ``scale``: the body scale, the largest shoulder-midpoint → hip-midpoint distance seen in the
  last :attr:`~DetectorParams.scale_window_s` seconds (the running maximum undoes most of the
  foreshortening of a climber leaning into a steep wall). Every margin below is a multiple of
  it, so the thresholds hold for a near or far camera alike;
- posture: *legs extended* (the hips at least :attr:`~DetectorParams.extended_legs` scales
  above the lowest foot), *standing* (legs extended, torso within 30° of vertical, both feet
  visible and level within :attr:`~DetectorParams.level_feet` scales) and *hands up* (a wrist
  above the shoulders by :attr:`~DetectorParams.hands_up` scales).

A frame counts only when the person is reliably there: hips and shoulders visible
(>= :attr:`~DetectorParams.min_body_visibility`) and the hip midpoint inside the frame.
Anything else (no person, a phantom detection, a camera swung away) is treated as "pose lost".

States: ``unknown`` → ``ground`` ⇄ ``wall``.

- **Ground line, static camera.** While the person is on the ground the lowest foot marks
  the floor: the ground line follows it with a first-order filter (time constant
  :attr:`~DetectorParams.ground_tau_s`) inside a dead band of ±``land_margin`` scales, and
  jumps to a foot seen clearly *below* it (the person walked towards the camera). Walking
  moves one foot at a time, so the lowest foot stays on the line: walking or standing at the
  wall is not an attempt.
- **Lift-off** (ground → wall): the lowest foot is more than
  :attr:`~DetectorParams.lift_margin` scales above the ground line, or a *sit start*: legs
  bent, hands up on the start holds and the hips more than
  :attr:`~DetectorParams.sit_hips` scales above the ground line (a person sitting on the mat
  has the hip joints about 0.2 torso lengths above it; on low kicker holds the feet stay
  near the line).
- **Landing** (wall → ground): the lowest foot is within
  :attr:`~DetectorParams.land_margin` scales of the ground line.
- **Ground out of frame** (no ground line learned yet, e.g. a climber already on the wall
  when the camera starts, or the mat just below the frame's bottom edge): the floor is
  assumed to be at or below the bottom edge. Landing is then inferred from the feet leaving
  the frame downward: the lowest foot within :attr:`~DetectorParams.edge_margin` scales of the
  bottom edge *with the legs extended* (a sit start also has its feet at the bottom edge, but
  with the hips down by the feet). The landing foot height becomes the ground line.
- **Body dropping fast** (works with a hand-held camera, whose ground line moves with the
  camera): a hip descent of at least :attr:`~DetectorParams.drop_scales` scales within
  :attr:`~DetectorParams.drop_window_s` seconds that ends standing is a landing.
- **Start of a stream** (state ``unknown``): a standing person, or feet at the bottom edge
  with the legs extended or the hands down, is on the ground; feet clearly above the bottom
  edge (not standing), or a sit start (feet at the bottom edge, hips low, hands up on holds),
  is on the wall: the attempt is open at the start and starts at the stream's first time
  (0.0 for a session).
- **Pose lost**: gaps up to :attr:`~DetectorParams.max_gap_s` seconds change nothing (a
  climber high on the wall out of the model's sight); a longer gap during an attempt ends it
  at the last frame the climber was seen, and the next sighting is judged afresh (the
  ground line is kept).

Every decision must hold for :attr:`~DetectorParams.confirm_s` seconds of frames (at least
:attr:`~DetectorParams.confirm_fraction` of them), and its time is the first frame of that
run, so times do not depend on the frame rate (25–60 fps) and single-frame glitches do not
flip the state. An attempt is reported only once it has lasted
:attr:`~DetectorParams.min_attempt_s` (a hop or one step on the first hold is not a
climb); a live consumer therefore learns of a start about 1 s after lift-off, and of an end
``confirm_s`` after landing.

Thresholds are ours, set from body proportions, not fitted to frames: the standing
hip-to-ankle height is about 1.6–1.8 torso lengths (segment lengths as fractions of stature
in Drillis & Contini 1966, as tabulated in Winter, *Biomechanics and Motor Control of Human
Movement*, 4th ed., 2009, fig. 4.1: torso 0.288 H, hip-to-ankle 0.491 H); a foot lifted onto a
first hold rises about half a torso length or more. Movement-phase ideas (immobility vs
movement of the pelvis) follow Dovgalecs et al., "Movement phase detection in climbing",
Sports Technology 7 (2014).

Limits: the ground is a horizontal image line, so a hand-held camera that tilts moves it
(the bottom-edge and fast-drop rules still work; the learned line may be wrong until the
next time the person stands); a person standing on a high volume or a bench looks like a
climber; a climber whose feet are hidden for the whole attempt is judged by the frames where
they are seen.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "Attempt",
    "AttemptDetector",
    "AttemptEvent",
    "DetectorParams",
    "detect_attempts",
]

# BlazePose landmark indices (climbd.pose.LANDMARK_NAMES)
_L_SH, _R_SH, _L_WR, _R_WR, _L_HIP, _R_HIP = 11, 12, 15, 16, 23, 24
_L_FOOT = (27, 29, 31)  # ankle, heel, foot index
_R_FOOT = (28, 30, 32)

State = Literal["unknown", "ground", "wall"]


@dataclass(frozen=True)
class DetectorParams:
    """Thresholds of :class:`AttemptDetector` (times in s, lengths in body scales; see the
    module docstring for what each means and why)."""

    lift_margin: float = 0.5
    land_margin: float = 0.35
    edge_margin: float = 0.25
    extended_legs: float = 1.0
    standing_legs: float = 1.2
    level_feet: float = 0.3
    hands_up: float = 0.3
    sit_hips: float = 0.4
    drop_scales: float = 2.0
    drop_window_s: float = 1.0
    confirm_s: float = 0.3
    confirm_fraction: float = 0.7
    min_attempt_s: float = 1.0
    max_gap_s: float = 2.0
    jump_scales: float = 0.75
    jump_speed: float = 15.0
    scale_window_s: float = 3.0
    ground_tau_s: float = 0.5
    min_foot_visibility: float = 0.3
    min_body_visibility: float = 0.5


@dataclass
class Attempt:
    """One attempt: ``start_s`` and ``end_s`` in the detector's time base (seconds; session
    time for a session). ``end_s`` is None while it runs (or when the stream ended on the
    wall). ``end_reason``: ``landed``, ``dropped``, ``lost`` (pose lost for longer than
    ``max_gap_s``) or None."""

    start_s: float
    end_s: float | None = None
    end_reason: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, or None while open."""
        return None if self.end_s is None else self.end_s - self.start_s

    def to_dict(self) -> dict[str, float | None]:
        """``{"start_s", "end_s"}`` rounded to milliseconds (the ingest/API shape)."""
        return {"start_s": round(self.start_s, 3),
                "end_s": None if self.end_s is None else round(self.end_s, 3)}


@dataclass(frozen=True)
class AttemptEvent:
    """A change reported by :meth:`AttemptDetector.update`: ``kind`` is ``start`` or ``end``;
    ``t`` the start/end time (in the past: decisions are confirmed later); ``attempt`` the
    attempt (its ``end_s`` is set for ``end``); ``detected_at`` the time of the frame that
    confirmed it."""

    kind: Literal["start", "end"]
    t: float
    attempt: Attempt
    detected_at: float


@dataclass
class _Frame:
    t: float
    foot: float | None
    hip_x: float
    hip_y: float
    torso: float
    extended: bool
    standing: bool
    hands_up: bool


@dataclass
class _Candidate:
    t0: float
    frames: int = 0
    hits: int = 0
    last_hit: float = 0.0
    reason: str = ""


@dataclass
class _SlidingMax:
    window: float
    q: deque[tuple[float, float]] = field(default_factory=deque)

    def push(self, t: float, v: float) -> float:
        while self.q and self.q[-1][1] <= v:
            self.q.pop()
        self.q.append((t, v))
        while self.q[0][0] < t - self.window:
            self.q.popleft()
        return self.q[0][1]


class AttemptDetector:
    """Incremental attempt detector: feed every frame with :meth:`update`, in time order.

    Args:
        aspect: frame width / height (image ``x`` is normalised to the width, ``y`` to the
            height). Raises ValueError if not positive.
        params: thresholds.

    Works the same live (one :class:`~climbd.pose.Pose` result at a time) and over a whole
    recorded session (:func:`detect_attempts`). Cost: a few dozen float operations per frame
    (``bench/bench_attempts.py``).
    """

    def __init__(self, aspect: float = 1.0, params: DetectorParams | None = None):
        if not aspect > 0:
            raise ValueError(f"aspect must be > 0, got {aspect}")
        self.aspect = float(aspect)
        self.p = params or DetectorParams()
        self.state: State = "unknown"
        #: ground line (image y, frame heights) or None while unknown
        self.ground: float | None = None
        self.attempts: list[Attempt] = []
        self._first_t: float | None = None
        self._started = False
        self._last_seen: float | None = None
        self._last_t: float | None = None
        self._scale = _SlidingMax(self.p.scale_window_s)
        self._cand: _Candidate | None = None
        self._lift_t: float | None = None  # wall since (confirmed, maybe not yet reported)
        self._reported = False
        self._hips: deque[tuple[float, float]] = deque()
        self._last_hip: tuple[float, float] | None = None
        self._prev_t: float | None = None

    # -- public ------------------------------------------------------------------------------
    @property
    def current(self) -> Attempt | None:
        """The attempt in progress (reported), or None."""
        if self.attempts and self.attempts[-1].end_s is None and self._reported:
            return self.attempts[-1]
        return None

    def update(self, t: float, image: np.ndarray | None) -> list[AttemptEvent]:
        """Feed one frame.

        Args:
            t: frame time, seconds (non-decreasing).
            image: ``(33, >=4)`` image landmarks ``x, y, z, visibility`` (normalised), or
                None when no person was found.

        Returns:
            The attempts that started or ended as a result (usually empty).
        """
        if self._first_t is None and not self._started:
            self._first_t = t
        self._started = True
        self._last_t = t
        events: list[AttemptEvent] = []
        f = self._measure(t, image)
        if f is not None and self._first_t is None:
            self._first_t = t
        if f is None:
            self._gap(t, events)
            return events
        if self._jumped(f):
            self._reset(t, events, end_at=self._last_seen)
            self.ground = None  # the camera or the scene changed: learn the floor again
            self._first_t = t
            self._scale.push(t, f.torso)
        self._last_seen = t
        self._last_hip = (f.hip_x, f.hip_y)
        self._hips.append((t, f.hip_y))
        while self._hips[0][0] < t - self.p.drop_window_s:
            self._hips.popleft()
        if self.state == "unknown":
            self._decide_initial(f, events)
        elif self.state == "ground":
            self._on_ground(f, events)
        else:
            self._on_wall(f, events)
        return events

    def finish(self) -> list[Attempt]:
        """The reported attempts (an attempt still running stays open: ``end_s`` None)."""
        return [a for i, a in enumerate(self.attempts)
                if a.end_s is not None or (i == len(self.attempts) - 1 and self._reported)]

    # -- per-frame measures ------------------------------------------------------------------
    def _measure(self, t: float, image: np.ndarray | None) -> _Frame | None:
        if image is None:
            return None
        p = self.p
        a = self.aspect
        lm = image[:, :4].tolist()
        body = (lm[_L_SH], lm[_R_SH], lm[_L_HIP], lm[_R_HIP])
        if any(not (b[3] >= p.min_body_visibility) for b in body):  # also rejects NaN
            return None
        hx = (lm[_L_HIP][0] + lm[_R_HIP][0]) * 0.5
        hy = (lm[_L_HIP][1] + lm[_R_HIP][1]) * 0.5
        if not (0.0 <= hx <= 1.0 and 0.0 <= hy <= 1.0):
            return None
        sx = (lm[_L_SH][0] + lm[_R_SH][0]) * 0.5
        sy = (lm[_L_SH][1] + lm[_R_SH][1]) * 0.5
        torso_now = math.hypot((sx - hx) * a, sy - hy)
        scale = self._scale.push(t, torso_now)
        if scale <= 1e-6:
            return None
        left = [lm[i][1] for i in _L_FOOT if lm[i][3] >= p.min_foot_visibility]
        right = [lm[i][1] for i in _R_FOOT if lm[i][3] >= p.min_foot_visibility]
        feet = left + right
        foot = max(feet) if feet else None
        extended = foot is not None and foot - hy >= p.extended_legs * scale
        upright = (hy - sy) >= math.cos(math.radians(30)) * torso_now > 0
        standing = (foot is not None and bool(left) and bool(right) and upright
                    and foot - hy >= p.standing_legs * scale
                    and abs(max(left) - max(right)) <= p.level_feet * scale)
        wrist = min(lm[_L_WR][1], lm[_R_WR][1])
        hands = wrist <= sy - p.hands_up * scale
        return _Frame(t, foot, hx * a, hy, scale, extended, standing, hands)

    # -- debouncing --------------------------------------------------------------------------
    def _vote(self, f: _Frame, hit: bool, reason: str = "") -> _Candidate | None:
        """Feed the current candidate decision; returns it once confirmed."""
        p = self.p
        c = self._cand
        if c is None:
            if not hit:
                return None
            c = self._cand = _Candidate(f.t, reason=reason)
            c.last_hit = f.t
        c.frames += 1
        if hit:
            c.hits += 1
            c.last_hit = f.t
        elif f.t - c.last_hit > p.confirm_s * (1 - p.confirm_fraction) + 1e-9 and \
                c.hits < p.confirm_fraction * c.frames:
            self._cand = None
            return None
        if f.t - c.t0 >= p.confirm_s - 1e-9 and c.hits >= p.confirm_fraction * c.frames:
            self._cand = None
            return c
        return None

    # -- states ------------------------------------------------------------------------------
    def _decide_initial(self, f: _Frame, events: list[AttemptEvent]) -> None:
        p = self.p
        if f.foot is None:
            return
        if self.ground is not None:
            on_wall = f.foot < self.ground - p.land_margin * f.torso
        elif f.standing:
            on_wall = False
        elif f.foot >= 1.0 - p.edge_margin * f.torso:
            on_wall = not f.extended and f.hands_up  # a sit start
        else:
            on_wall = True
        c = self._vote(f, on_wall, "wall") if on_wall else None
        if c is None and not on_wall:
            self._cand = None
            # on the ground: start learning the ground line from the feet
            self.state = "ground"
            self.ground = f.foot if self.ground is None else self.ground
            return
        if c is not None:
            first = self._first_t if self._first_t is not None else c.t0
            # the session opened on the wall: the attempt starts with the stream
            start = first if c.t0 - first <= p.max_gap_s else c.t0
            self._enter_wall(start, f, events)

    def _on_ground(self, f: _Frame, events: list[AttemptEvent]) -> None:
        p = self.p
        if f.foot is None:
            return
        assert self.ground is not None
        lifted = f.foot < self.ground - p.lift_margin * f.torso
        c = self._vote(f, lifted or self._sit_start(f), "lift")
        if c is not None:
            self._enter_wall(c.t0, f, events)
            return
        if self._cand is None:
            d = f.foot - self.ground
            if abs(d) <= p.land_margin * f.torso and f.extended:
                dt = max(0.0, f.t - (self._prev_t or f.t))
                self.ground += d * (1.0 - math.exp(-dt / p.ground_tau_s)) if dt else 0.0
            elif d > 0:
                self.ground = f.foot  # the person came closer to the camera
        self._prev_t = f.t

    def _sit_start(self, f: _Frame) -> bool:
        """Crouched (legs bent), hands up on the start holds, hips off the floor."""
        return (self.ground is not None and f.hands_up and not f.extended
                and f.hip_y < self.ground - self.p.sit_hips * f.torso)

    def _enter_wall(self, start: float, f: _Frame, events: list[AttemptEvent]) -> None:
        self.state = "wall"
        self._cand = None
        self.attempts.append(Attempt(start))
        self._reported = False
        self._check_report(f.t, events)

    def _check_report(self, now: float, events: list[AttemptEvent]) -> None:
        a = self.attempts[-1]
        if not self._reported and now - a.start_s >= self.p.min_attempt_s - 1e-9:
            self._reported = True
            events.append(AttemptEvent("start", a.start_s, a, now))

    def _on_wall(self, f: _Frame, events: list[AttemptEvent]) -> None:
        p = self.p
        self._check_report(f.t, events)
        if f.foot is None:
            return
        reason = ""
        if self.ground is not None:
            on_ground = (f.foot >= self.ground - p.land_margin * f.torso
                         and not self._sit_start(f))
        else:  # ground below the frame: feet leave it downward, legs extended
            on_ground = f.extended and f.foot >= 1.0 - p.edge_margin * f.torso
        if on_ground:
            reason = "landed"
        elif f.standing and self._hips and \
                f.hip_y - min(h for _, h in self._hips) >= p.drop_scales * f.torso:
            reason = "dropped"
        c = self._vote(f, bool(reason), reason)
        if c is None:
            return
        a = self.attempts[-1]
        self.state = "ground"
        if self.ground is None or c.reason == "dropped":
            self.ground = f.foot
        self._prev_t = f.t
        if not self._reported:  # too short to be a climb: forget it
            self.attempts.pop()
            return
        a.end_s, a.end_reason = c.t0, c.reason
        events.append(AttemptEvent("end", c.t0, a, f.t))

    def _jumped(self, f: _Frame) -> bool:
        """A whole-body jump no human makes between two frames (a video cut, a loop, a
        camera knocked): the hips move at least ``jump_scales`` body scales at more than
        ``jump_speed`` scales/s (~7 m/s, faster than a 2.5 m fall lands)."""
        if self._last_hip is None or self._last_seen is None:
            return False
        d = math.hypot(f.hip_x - self._last_hip[0], f.hip_y - self._last_hip[1])
        dt = max(f.t - self._last_seen, 1e-6)
        return d >= self.p.jump_scales * f.torso and d / dt >= self.p.jump_speed * f.torso

    def _gap(self, t: float, events: list[AttemptEvent]) -> None:
        if self._last_seen is None or t - self._last_seen <= self.p.max_gap_s:
            return
        self._reset(t, events, end_at=self._last_seen)
        self._first_t = None  # set again by the next sighting

    def _reset(self, t: float, events: list[AttemptEvent], end_at: float | None) -> None:
        """Forget the scene (after a long gap or a cut): an attempt in progress ends where
        the climber was last seen (``lost``); the ground line is forgotten after a cut."""
        self._cand = None
        if self.state == "wall":
            a = self.attempts[-1]
            if self._reported:
                a.end_s, a.end_reason = end_at, "lost"
                events.append(AttemptEvent("end", a.end_s if a.end_s is not None else t, a, t))
            else:
                self.attempts.pop()
        self.state = "unknown"
        self._scale = _SlidingMax(self.p.scale_window_s)
        self._hips.clear()
        self._last_seen = None
        self._last_hip = None


def detect_attempts(times: Iterable[float], image: Iterable[np.ndarray | None], *,
                    aspect: float, start_s: float | None = 0.0, end_s: float | None = None,
                    params: DetectorParams | None = None) -> list[Attempt]:
    """Attempts over a whole recorded series.

    Args:
        times: frame times, seconds from the session start, non-decreasing.
        image: per frame ``(33, >=4)`` image landmarks or None (no person).
        aspect: frame width / height.
        start_s: the session's start (its first frame, 0.0): an attempt open at the first
            pose starts here. None: at the first frame given.
        end_s: the session's end; when the last pose is more than ``max_gap_s`` before it,
            the gap ends an attempt that is still running (``lost``). None: no such check.
        params: thresholds.

    Returns:
        The attempts in time order; the last one has ``end_s`` None if it runs to the end.
    """
    det = AttemptDetector(aspect, params)
    if start_s is not None:
        det.update(start_s, None)
    for t, im in zip(times, image, strict=True):
        det.update(float(t), im)
    if end_s is not None:
        det.update(float(end_s), None)
    return det.finish()
