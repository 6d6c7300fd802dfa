"""Synthetic BlazePose landmarks with hand-known geometry (for the attempt tests).

A body template in metres (x right, y down, z towards the camera, hips at the origin, as
MediaPipe world landmarks) is placed in the image by a pixels-per-metre factor, so every
image distance has a known size in metres.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import av
import numpy as np

from climbd.ingest import decode_rgb_frames
from tests.conftest import STEEPWALL

#: template joints, metres (x, y, z); 0-10 (face) are put around the head point
_BODY = {
    "head": (0.0, -0.62, 0.0),
    7: (0.07, -0.62, 0.0), 8: (-0.07, -0.62, 0.0),
    11: (0.2, -0.5, 0.0), 12: (-0.2, -0.5, 0.0),
    13: (0.25, -0.22, 0.0), 14: (-0.25, -0.22, 0.0),
    15: (0.27, 0.03, 0.0), 16: (-0.27, 0.03, 0.0),
    17: (0.28, 0.1, 0.0), 18: (-0.28, 0.1, 0.0),
    19: (0.26, 0.11, 0.0), 20: (-0.26, 0.11, 0.0),
    21: (0.25, 0.08, 0.0), 22: (-0.25, 0.08, 0.0),
    23: (0.1, 0.0, 0.0), 24: (-0.1, 0.0, 0.0),
    25: (0.1, 0.45, 0.0), 26: (-0.1, 0.45, 0.0),
    27: (0.1, 0.9, 0.0), 28: (-0.1, 0.9, 0.0),
    29: (0.1, 0.95, -0.05), 30: (-0.1, 0.95, -0.05),
    31: (0.12, 0.95, 0.1), 32: (-0.12, 0.95, 0.1),
}
FOOT_DROP_M = 0.95  # hips to the sole, standing


def template(arms_up: bool = False, left_foot_up_m: float = 0.0,
             right_foot_up_m: float = 0.0) -> np.ndarray:
    """(33, 3) world landmarks, metres. ``arms_up`` puts the wrists above the head (hands on
    holds); ``*_foot_up_m`` raises a foot (knee bent) by that much."""
    w = np.zeros((33, 3), np.float64)
    for i in range(11):
        w[i] = _BODY["head"]
    for k, v in _BODY.items():
        if isinstance(k, int):
            w[k] = v
    if arms_up:
        for side, sx in ((0, 1), (1, -1)):
            w[13 + side] = (0.25 * sx, -0.75, 0.0)
            w[15 + side] = (0.27 * sx, -1.0, 0.0)
            for j in (17, 19, 21):
                w[j + side] = (0.27 * sx, -1.07, 0.0)
    for up, idx in ((left_foot_up_m, (25, 27, 29, 31)), (right_foot_up_m, (26, 28, 30, 32))):
        if up:
            w[idx[0], 1] -= up / 2
            w[idx[0], 2] += up / 2
            for i in idx[1:]:
                w[i, 1] -= up
    return w


def to_image(world: np.ndarray, hip_px: tuple[float, float], ppm: float, width: int,
             height: int, visibility: float = 0.95) -> np.ndarray:
    """(33, 5) image landmarks of ``world`` with the hips at pixel ``hip_px`` and ``ppm``
    pixels per metre."""
    im = np.empty((33, 5), np.float32)
    im[:, 0] = (hip_px[0] + world[:, 0] * ppm) / width
    im[:, 1] = (hip_px[1] + world[:, 1] * ppm) / height
    im[:, 2] = world[:, 2] * ppm / width
    im[:, 3] = visibility
    im[:, 4] = np.nan
    return im


class Scene:
    """Builds a frame sequence: a person at a camera with ``ppm`` px/m; the floor at image
    row ``floor_px``."""

    def __init__(self, fps: float = 30.0, width: int = 720, height: int = 1280,
                 ppm: float = 400.0, floor_px: float = 1150.0):
        self.fps, self.width, self.height, self.ppm, self.floor = fps, width, height, ppm, floor_px
        self.times: list[float] = []
        self.image: list[np.ndarray | None] = []
        self.world: list[np.ndarray] = []
        self.t = 0.0

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def hold(self, seconds: float, world: np.ndarray | None, hip_x_px: float = 360.0,
             lift_m: float = 0.0) -> Scene:
        """``seconds`` of the pose ``world`` still, the lowest sole ``lift_m`` above the floor
        (``world=None``: nobody in view)."""
        return self.move(seconds, world, hip_x_px, hip_x_px, lift_m, lift_m)

    def move(self, seconds: float, world: np.ndarray | None, x0: float, x1: float,
             lift0_m: float, lift1_m: float) -> Scene:
        """Move the body linearly: hips from ``x0`` to ``x1`` px, lowest sole from ``lift0_m``
        to ``lift1_m`` metres above the floor."""
        n = round(seconds * self.fps)
        for k in range(n):
            f = k / (n - 1) if n > 1 else 1.0  # both ends included
            if world is None:
                self.times.append(self.t)
                self.image.append(None)
                self.world.append(np.full((33, 3), np.nan))
            else:
                lift = lift0_m + (lift1_m - lift0_m) * f
                sole = world[[29, 30, 31, 32], 1].max()
                hip_y = self.floor - (lift + sole) * self.ppm
                x = x0 + (x1 - x0) * f
                self.times.append(self.t)
                self.image.append(to_image(world, (x, hip_y), self.ppm, self.width,
                                           self.height))
                self.world.append(world.copy())
            self.t += 1.0 / self.fps
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, image, world) of the frames that have a person (as stored in SQLite)."""
        keep = [i for i, im in enumerate(self.image) if im is not None]
        return (np.array([self.times[i] for i in keep]),
                np.stack([self.image[i] for i in keep]),
                np.stack([self.world[i] for i in keep]).astype(np.float32))


def read_attempt_labels(path: Path) -> dict[str, dict[str, Any]]:
    """Parse the table of ../shared/media/ATTEMPTS.md.

    Returns ``{clip: {"counts": {int}, "start": (lo, hi), "end": ("window", lo, hi) |
    ("none_before", t) | ("none", None)}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    window = re.compile(r"(\d+(?:\.\d+)?)\s*[–-]\s*(\d+(?:\.\d+)?)")
    for line in path.read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+\.mp4)`[^|]*\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if not m:
            continue
        clip, counts, start, end = (s.strip() for s in m.groups())
        ws = window.search(start)
        assert ws, f"no start window for {clip}: {start!r}"
        we = window.search(end)
        nb = re.search(r"none before (\d+(?:\.\d+)?)", end)
        if we and not end.lower().startswith(("none", "if reported: none")):
            end_rule: tuple[Any, ...] = ("window", float(we[1]), float(we[2]))
        elif nb:
            end_rule = ("none_before", float(nb[1]))
        else:
            end_rule = ("none", None)
        out[clip] = {"counts": {int(c) for c in re.findall(r"\d+", counts)},
                     "start": (float(ws[1]), float(ws[2])), "end": end_rule}
    return out


def empty_wall_clip(out: Path, seconds: float = 3.0) -> Path:
    """A 3 s clip of the steep wall with nobody on it: the per-pixel temporal median of the
    clip's frames (the climber moves across the wall, so the median is the wall), with
    sensor-like noise per frame, encoded with PyAV."""
    frames = [rgb for i, _, rgb in decode_rgb_frames(STEEPWALL) if i % 8 == 0]
    wall = np.median(np.stack(frames), axis=0)
    rng = np.random.default_rng(1)
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width = wall.shape[:2]
        s.pix_fmt = "yuv420p"
        for _ in range(round(seconds * 25)):
            img = np.clip(wall + rng.normal(0, 2.0, wall.shape), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return out
