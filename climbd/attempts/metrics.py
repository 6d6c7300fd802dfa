"""Per-attempt metrics from a pose series (pure numpy).

Distances and angles come from BlazePose *world* landmarks (metres); image landmarks are
used only where world landmarks cannot help (below) and for drawing.

How distances are measured
==========================

World landmarks are centred on the hips in every frame, so they cannot show the hips
*moving*. The hip's path is therefore taken from the image (the hip midpoint in pixels) and
converted to metres with a per-attempt scale (:func:`metres_per_pixel`): world length /
image length of 10 limb and torso segments, median over segments and frames. Caveats of
this monocular estimate:

- it assumes the climber moves in a plane roughly parallel to the image (a wall facing the
  camera); motion towards the camera is invisible and a wall seen at an angle shortens
  horizontal distances;
- foreshortened segments (a climber leaning in) shrink image lengths more than world
  lengths; the medians ignore a few such segments, a whole body leaning in still
  *increases* the scale by a few percent;
- world landmark lengths are MediaPipe's estimate of the body's size (it assumes typical
  proportions), so absolute metres carry an error of ~10 % (Bazarevsky et al. 2020 report
  world-landmark errors of several cm per joint);
- a moving (hand-held) camera adds its own motion to the hip path.

Heights are "up in the image" (a level camera: up the wall).

Metrics
=======

- ``time_on_wall_s``: end - start (to the last pose when the attempt is open);
- ``height_gained_m``: highest hip position minus the hip at the start (>= 0);
- ``hip_path_m``: length of the hip's path, after a centred moving average over
  :data:`SMOOTH_S` seconds (landmark jitter would otherwise add length);
- ``mean_hip_speed_mps`` = path / time with pose; ``peak_hip_speed_mps`` = the largest
  smoothed frame-to-frame speed;
- ``economy`` = height gained / hip path (1.0 = straight up; None for a path < 1 cm);
- ``pauses``: rests and lock-offs, the spans where the smoothed hip speed stays below
  :data:`PAUSE_SPEED_MPS` for at least :data:`PAUSE_MIN_S` (our thresholds: 10 cm/s is above
  the residual jitter of smoothed BlazePose hips of a climber holding still — a median of
  0.03–0.09 m/s on the test clips, hand-held camera included — and 1 s separates a rest from
  the brief stop between two moves; immobility phases in climbing as in Dovgalecs et al.,
  "Movement phase detection in climbing", Sports Technology 7, 2014);
- ``angles``: elbow (shoulder-elbow-wrist), knee (hip-knee-ankle) and hip (shoulder-hip-knee)
  angles, left and right, degrees, 3-D from world landmarks, sampled at :data:`SERIES_HZ`;
- ``com``: the centre of mass (:mod:`climbd.attempts.com`, de Leva 1996): its height gained
  (metres, same scale as the hip) and its path in image coordinates for drawing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from climbd.attempts.com import centre_of_mass

__all__ = [
    "ANGLES",
    "PAUSE_MIN_S",
    "PAUSE_SPEED_MPS",
    "SERIES_HZ",
    "SMOOTH_S",
    "attempt_metrics",
    "joint_angle",
    "metres_per_pixel",
    "pauses",
]

#: Moving-average window for the hip path, seconds.
SMOOTH_S = 0.5
#: Hip speed below which the climber counts as still, m/s.
PAUSE_SPEED_MPS = 0.1
#: Shortest stillness reported as a pause, seconds.
PAUSE_MIN_S = 1.0
#: Sample rate of the angle and centre-of-mass series in the metrics, Hz.
SERIES_HZ = 10.0
#: A gap in the pose longer than this splits speeds and pauses, seconds.
_MAX_STEP_S = 0.5

#: Joint angles: name -> (a, vertex, b) landmark indices.
ANGLES: dict[str, tuple[int, int, int]] = {
    "left_elbow": (11, 13, 15), "right_elbow": (12, 14, 16),
    "left_knee": (23, 25, 27), "right_knee": (24, 26, 28),
    "left_hip": (11, 23, 25), "right_hip": (12, 24, 26),
}

_SEGMENTS = ((11, 23), (12, 24), (23, 25), (24, 26), (25, 27), (26, 28),
             (11, 13), (12, 14), (13, 15), (14, 16))


def joint_angle(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The angle at ``vertex`` between the rays to ``a`` and ``b``, degrees (0..180).

    Args:
        a, vertex, b: ``(..., D)`` points (any units). Returns ``(...)``; NaN where a ray has
            zero length.
    """
    u = np.asarray(a, np.float64) - vertex
    v = np.asarray(b, np.float64) - vertex
    nu = np.linalg.norm(u, axis=-1)
    nv = np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(u * v, axis=-1) / (nu * nv)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def metres_per_pixel(image: np.ndarray, world: np.ndarray, width: int, height: int) -> float:
    """Image-to-metre scale of a series, metres per pixel.

    For each frame, the median over 10 torso and limb segments of (world length, m) /
    (image length, px) — the median ignores a few segments foreshortened by pointing at the
    camera — then the median over frames. ``image (n, 33, >=2)``, ``world (n, 33, 3)``.
    Returns NaN when no frame has usable segments.
    """
    px = image[..., :2].astype(np.float64) * (width, height)
    a = np.array([s[0] for s in _SEGMENTS])
    b = np.array([s[1] for s in _SEGMENTS])
    img = np.linalg.norm(px[:, a] - px[:, b], axis=-1)
    wld = np.linalg.norm(world[:, a].astype(np.float64) - world[:, b], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(img > 1e-6, wld / img, np.nan)
    ok = np.isfinite(ratio).any(axis=1)
    if not ok.any():
        return float("nan")
    return float(np.median(np.nanmedian(ratio[ok], axis=1)))


def _smooth(times: np.ndarray, xy: np.ndarray, window_s: float) -> np.ndarray:
    """Centred moving average in time (the window shrinks symmetrically at the ends, so a
    straight-line motion at constant speed is left unchanged)."""
    n = len(times)
    out = np.empty_like(xy)
    half = window_s / 2
    lo = np.searchsorted(times, times - half, side="left")
    hi = np.searchsorted(times, times + half, side="right")
    csum = np.concatenate([np.zeros((1, xy.shape[1])), np.cumsum(xy, axis=0)])
    for i in range(n):
        k = min(i - lo[i], hi[i] - 1 - i)  # symmetric half-width in samples
        out[i] = (csum[i + k + 1] - csum[i - k]) / (2 * k + 1)
    return out


def pauses(times: np.ndarray, speed: np.ndarray, *, threshold: float = PAUSE_SPEED_MPS,
           min_s: float = PAUSE_MIN_S) -> list[dict[str, float]]:
    """Spans where ``speed`` (m/s, per frame) stays below ``threshold`` for ``min_s`` or more.

    Returns ``[{"start_s", "end_s", "duration_s"}]`` (times as given).
    """
    out: list[dict[str, float]] = []
    still = speed < threshold
    i, n = 0, len(times)
    while i < n:
        if not still[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and still[j + 1] and times[j + 1] - times[j] <= _MAX_STEP_S:
            j += 1
        if times[j] - times[i] >= min_s - 1e-9:
            out.append({"start_s": round(float(times[i]), 3), "end_s": round(float(times[j]), 3),
                        "duration_s": round(float(times[j] - times[i]), 3)})
        i = j + 1
    return out


def _resample(times: np.ndarray, values: np.ndarray, t0: float, t1: float) -> tuple[
        np.ndarray, np.ndarray]:
    grid = np.arange(t0, t1 + 1e-9, 1.0 / SERIES_HZ)
    idx = np.clip(np.searchsorted(times, grid), 0, len(times) - 1)
    return grid, values[idx]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def attempt_metrics(times: np.ndarray, image: np.ndarray, world: np.ndarray, *,
                    width: int, height: int, start_s: float,
                    end_s: float | None) -> dict[str, Any]:
    """Metrics of one attempt (see the module docstring for each).

    Args:
        times: ``(n,)`` seconds of the session's poses (sorted).
        image: ``(n, 33, 5)`` image landmarks (normalised, visibility in column 3).
        world: ``(n, 33, 3)`` world landmarks, metres.
        width, height: video size, pixels.
        start_s, end_s: the attempt (``end_s`` None: to the last pose).

    Returns:
        A JSON-ready dict; distances None when the attempt has fewer than 2 poses.
    """
    times = np.asarray(times, np.float64)
    hi = len(times) if end_s is None else int(np.searchsorted(times, end_s, side="right"))
    lo = int(np.searchsorted(times, start_s, side="left"))
    im = np.asarray(image[lo:hi], np.float64)
    # the frames the detector trusts: hips visible and inside the frame
    hips = im[:, 23:25]
    good = ((hips[:, :, 3] >= 0.5).all(axis=1) & (hips[:, :, 0] >= 0).all(axis=1)
            & (hips[:, :, 0] <= 1).all(axis=1) & (hips[:, :, 1] >= 0).all(axis=1)
            & (hips[:, :, 1] <= 1).all(axis=1)) if im.shape[-1] >= 4 else np.ones(len(im), bool)
    t = times[lo:hi][good]
    im = im[good]
    wd = np.asarray(world[lo:hi], np.float64)[good]
    last = end_s if end_s is not None else (float(t[-1]) if len(t) else start_s)
    out: dict[str, Any] = {
        "time_on_wall_s": _r(last - start_s), "poses": len(t),
        "height_gained_m": None, "hip_path_m": None, "mean_hip_speed_mps": None,
        "peak_hip_speed_mps": None, "economy": None, "pauses": [], "metres_per_px": None,
        "angles": {"t": []}, "com": {"height_gained_m": None, "path": []},
    }
    if len(t) < 2:
        return out
    mpp = metres_per_pixel(im, wd, width, height)
    if not np.isfinite(mpp):
        return out
    hip_px = (im[:, 23, :2] + im[:, 24, :2]) / 2 * (width, height)
    hip = _smooth(t, hip_px, SMOOTH_S) * mpp  # metres, y down
    step = np.linalg.norm(np.diff(hip, axis=0), axis=1)
    dt = np.diff(t)
    ok = (dt > 0) & (dt <= _MAX_STEP_S)
    path = float(step[ok].sum())
    speed = np.zeros(len(t))
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(ok, step / np.where(dt > 0, dt, 1), np.nan)
    # per-frame speed: mean of the steps on either side
    speed[1:-1] = np.nanmean(np.stack([v[:-1], v[1:]]), axis=0)
    speed[0], speed[-1] = v[0], v[-1]
    speed = np.nan_to_num(speed, nan=0.0)
    up = -hip[:, 1]
    gained = max(0.0, float(up.max() - up[0]))
    span = float(dt[ok].sum())
    out.update({
        "metres_per_px": _r(mpp, 6),
        "height_gained_m": _r(gained),
        "hip_path_m": _r(path),
        "mean_hip_speed_mps": _r(path / span) if span > 0 else None,
        "peak_hip_speed_mps": _r(float(np.nanmax(v))) if np.isfinite(v).any() else None,
        "economy": _r(gained / path) if path >= 0.01 else None,
        "pauses": pauses(t, speed),
    })
    grid, idx_vals = _resample(t, np.arange(len(t)), float(t[0]), float(t[-1]))
    angles: dict[str, Any] = {"t": [round(float(g), 2) for g in grid]}
    for name, (a, b, c) in ANGLES.items():
        ang = joint_angle(wd[idx_vals, a], wd[idx_vals, b], wd[idx_vals, c])
        angles[name] = [None if not np.isfinite(x) else round(float(x), 1) for x in ang]
    out["angles"] = angles
    com_img = centre_of_mass(im[:, :, :2])
    com_up = -_smooth(t, com_img * (width, height), SMOOTH_S)[:, 1] * mpp
    out["com"] = {
        "height_gained_m": _r(max(0.0, float(com_up.max() - com_up[0]))),
        "path": [[round(float(g), 2), round(float(com_img[i, 0]), 4),
                  round(float(com_img[i, 1]), 4)] for g, i in zip(grid, idx_vals, strict=True)],
    }
    return out
