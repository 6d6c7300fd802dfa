"""Attempts of a recorded series with their metrics (detection + metrics in one call)."""

from __future__ import annotations

from typing import Any

import numpy as np

from climbd.attempts.detect import DetectorParams, detect_attempts
from climbd.attempts.metrics import attempt_metrics

__all__ = ["analyse_series"]


def analyse_series(times: np.ndarray, image: np.ndarray, world: np.ndarray, *, width: int,
                   height: int, duration_s: float | None = None,
                   params: DetectorParams | None = None) -> list[dict[str, Any]]:
    """Detect the attempts of a session's poses and measure each.

    Args:
        times: ``(n,)`` seconds from the session start of the frames that have a pose.
        image: ``(n, 33, 5)`` image landmarks; world: ``(n, 33, 3)`` metres.
        width, height: video size in pixels (must be > 0).
        duration_s: the session's length (a pose gap at the end longer than ``max_gap_s``
            ends a running attempt); None: not checked.

    Returns:
        ``[{"start_s", "end_s" | None, "duration_s" | None, "end_reason", "metrics"}]`` in
        time order.

    Raises:
        ValueError: width/height not positive or shapes disagree.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"video size must be positive, got {width}x{height}")
    if not (len(times) == len(image) == len(world)):
        raise ValueError("times, image and world must have the same length")
    found = detect_attempts(times, list(image), aspect=width / height, start_s=0.0,
                            end_s=duration_s, params=params)
    out = []
    for a in found:
        d: dict[str, Any] = dict(a.to_dict())
        d["duration_s"] = None if a.duration_s is None else round(a.duration_s, 3)
        d["end_reason"] = a.end_reason
        d["metrics"] = attempt_metrics(times, image, world, width=width, height=height,
                                       start_s=a.start_s, end_s=a.end_s)
        out.append(d)
    return out
