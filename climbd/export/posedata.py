"""Export (c): a session's pose data as CSV or JSON, with landmark names and units.

Units (the same in both formats):

- time ``t_s``: seconds from the session start (the first video frame), float64;
- ``frame``: session frame index (0 = first video frame);
- image landmarks ``x, y``: normalised to the frame width / height (0..1, may be slightly
  outside when a joint leaves the picture); ``z``: depth relative to the hip midpoint on
  roughly the scale of ``x``; ``visibility``, ``presence``: probabilities 0..1 (presence is
  empty/null with the legacy MediaPipe graph);
- world landmarks ``x, y, z``: metres, origin at the midpoint of the hips.

**CSV** (long form, one row per frame and landmark, 33 rows per frame)::

    frame,t_s,landmark_index,landmark,image_x_norm,image_y_norm,image_z_norm,visibility,
    presence,world_x_m,world_y_m,world_z_m

followed by the attempt the frame belongs to and that attempt's headline metrics (empty when
the frame is in no attempt)::

    attempt,attempt_start_s,attempt_end_s,attempt_time_on_wall_s,attempt_height_gained_m,
    attempt_hip_path_m,attempt_economy

Empty cells are missing values (NaN). Floats are written with enough digits to read back
to the stored float32 values exactly (``%.9g``; times with Python's shortest round-trip
repr).

**JSON**: ``{"format": "climbd-poses", "version": 1, "session": {...}, "range": {...},
"units": {...}, "landmarks": [33 names], "image_fields": [...], "world_fields": [...],
"frames": [{"frame", "t_s", "image": 33 x [x, y, z, visibility, presence],
"world": 33 x [x, y, z]}, ...], "attempts": [{"start_s", "end_s", "duration_s", "metrics"}]}``
(the session's attempts overlapping the range, with every metric of
:mod:`climbd.attempts.metrics`); missing values are ``null``.

:func:`read_csv` and :func:`read_json` turn a file back into a :class:`PoseSeries`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from climbd.errors import ExportError
from climbd.export.common import (
    ExportCancelled,
    ExportResult,
    Progress,
    ShouldStop,
    atomic_output,
    never,
)
from climbd.pose import LANDMARK_NAMES, NUM_LANDMARKS
from climbd.storage.posecodec import PoseSeries

__all__ = [
    "ATTEMPT_COLUMNS",
    "CSV_COLUMNS",
    "JSON_FORMAT",
    "UNITS",
    "read_csv",
    "read_json",
    "write_csv",
    "write_json",
]

#: Header of the CSV export.
CSV_COLUMNS: tuple[str, ...] = (
    "frame", "t_s", "landmark_index", "landmark", "image_x_norm", "image_y_norm",
    "image_z_norm", "visibility", "presence", "world_x_m", "world_y_m", "world_z_m",
)
#: Columns appended to :data:`CSV_COLUMNS`: the frame's attempt and its headline metrics.
ATTEMPT_COLUMNS: tuple[str, ...] = (
    "attempt", "attempt_start_s", "attempt_end_s", "attempt_time_on_wall_s",
    "attempt_height_gained_m", "attempt_hip_path_m", "attempt_economy",
)
_ATTEMPT_METRICS = ("time_on_wall_s", "height_gained_m", "hip_path_m", "economy")
JSON_FORMAT = "climbd-poses"
JSON_VERSION = 1

#: Units of every field, written into the JSON export.
UNITS: dict[str, str] = {
    "t_s": "seconds from the session start (its first video frame)",
    "frame": "session frame index, 0 = first video frame",
    "image.x": "normalised to the frame width (0..1)",
    "image.y": "normalised to the frame height (0..1)",
    "image.z": "depth relative to the hip midpoint, roughly the scale of image.x",
    "image.visibility": "probability 0..1",
    "image.presence": "probability 0..1 (null: not provided by the model)",
    "world": "metres, origin at the midpoint of the hips (x, y, z)",
}


def _f32(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.9g}"


def _check_progress(i: int, n: int, progress: Progress | None, should_stop: ShouldStop
                    ) -> None:
    if i % 50 == 0 or i == n:
        if should_stop():
            raise ExportCancelled("export cancelled")
        if progress is not None:
            progress(i, n)


def _attempt_cells(attempts: Sequence[Mapping[str, Any]], t: float) -> list[str]:
    for i, a in enumerate(attempts):
        end = a.get("end_s")
        if a["start_s"] <= t and (end is None or t <= end):
            m = a.get("metrics") or {}
            return [str(a.get("index", i)), repr(float(a["start_s"])),
                    "" if end is None else repr(float(end)),
                    *("" if m.get(k) is None else repr(float(m[k])) for k in _ATTEMPT_METRICS)]
    return [""] * len(ATTEMPT_COLUMNS)


def write_csv(poses: PoseSeries, dst: str | os.PathLike[str], *,
              attempts: Sequence[Mapping[str, Any]] | None = None,
              progress: Progress | None = None, should_stop: ShouldStop = never
              ) -> ExportResult:
    """Write ``poses`` as CSV (see the module docstring) to ``dst`` atomically.

    ``attempts``: the session's attempts (``{"start_s", "end_s", "metrics"}``), for the
    attempt columns.

    Raises:
        ExportCancelled, DiskFullError (partial file removed), StorageError.
    """
    path = Path(dst)
    n = len(poses)
    image = poses.image.astype(np.float64)
    world = poses.world.astype(np.float64)
    with atomic_output(path) as part, open(part, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS + ATTEMPT_COLUMNS)
        for i in range(n):
            frame, t = int(poses.frames[i]), repr(float(poses.times[i]))
            extra = _attempt_cells(list(attempts or []), float(poses.times[i]))
            w.writerows(
                [frame, t, j, LANDMARK_NAMES[j], *(_f32(v) for v in image[i, j]),
                 *(_f32(v) for v in world[i, j]), *extra]
                for j in range(NUM_LANDMARKS)
            )
            _check_progress(i + 1, n, progress, should_stop)
    return _result(path, poses)


def _nullable(a: np.ndarray) -> list[Any]:
    """Nested lists of floats with NaN as None (float32 values widened exactly)."""
    out: list[Any] = a.astype(np.float64).tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    return [fix(v) for v in out]


def write_json(poses: PoseSeries, dst: str | os.PathLike[str], *,
               session: Mapping[str, Any] | None = None,
               range_s: tuple[float | None, float | None] = (None, None),
               attempts: Sequence[Mapping[str, Any]] | None = None,
               progress: Progress | None = None, should_stop: ShouldStop = never
               ) -> ExportResult:
    """Write ``poses`` as JSON (see the module docstring) to ``dst`` atomically.

    Args:
        session: facts copied into the ``session`` object (id, name, width, height, fps...).
        range_s: the requested range (session seconds), recorded in ``range``.
        attempts: the session's attempts with their metrics, written as ``attempts``.

    Raises:
        ExportCancelled, DiskFullError (partial file removed), StorageError.
    """
    path = Path(dst)
    n = len(poses)
    image = _nullable(poses.image)
    world = _nullable(poses.world)
    frames = []
    for i in range(n):
        frames.append({"frame": int(poses.frames[i]), "t_s": float(poses.times[i]),
                       "image": image[i], "world": world[i]})
        _check_progress(i + 1, n, progress, should_stop)
    doc = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "session": dict(session or {}),
        "range": {"start_s": range_s[0], "end_s": range_s[1]},
        "units": UNITS,
        "landmarks": list(LANDMARK_NAMES),
        "image_fields": ["x", "y", "z", "visibility", "presence"],
        "world_fields": ["x", "y", "z"],
        "frames": frames,
        "attempts": [dict(a) for a in attempts or []],
    }
    with atomic_output(path) as part, open(part, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
    return _result(path, poses)


def _result(path: Path, poses: PoseSeries) -> ExportResult:
    start = float(poses.times[0]) if len(poses) else 0.0
    end = float(poses.times[-1]) if len(poses) else 0.0
    return ExportResult(path, len(poses), path.stat().st_size, start, end, 0.0,
                        f"{len(poses)} frames with a pose; image landmarks normalised, "
                        "world landmarks in metres, times in seconds")


def _cell(s: str) -> float:
    return math.nan if s == "" else float(s)


def read_csv(path: str | os.PathLike[str]) -> PoseSeries:
    """Read a CSV pose export back into a :class:`PoseSeries`.

    Raises:
        ExportError: the header or the row layout is not that of :func:`write_csv`.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) not in (CSV_COLUMNS, CSV_COLUMNS + ATTEMPT_COLUMNS):
        raise ExportError(f"{path}: not a climbd pose CSV (header {rows[:1]})")
    body = rows[1:]
    if len(body) % NUM_LANDMARKS:
        raise ExportError(f"{path}: {len(body)} rows is not a multiple of {NUM_LANDMARKS}")
    n = len(body) // NUM_LANDMARKS
    frames = np.zeros(n, np.int32)
    times = np.zeros(n, np.float64)
    image = np.zeros((n, NUM_LANDMARKS, 5), np.float32)
    world = np.zeros((n, NUM_LANDMARKS, 3), np.float32)
    for k, row in enumerate(body):
        i, j = divmod(k, NUM_LANDMARKS)
        if int(row[2]) != j or row[3] != LANDMARK_NAMES[j]:
            raise ExportError(f"{path}: row {k + 2} is landmark {row[2]} {row[3]!r}, "
                              f"expected {j} {LANDMARK_NAMES[j]!r}")
        frames[i], times[i] = int(row[0]), float(row[1])
        image[i, j] = [_cell(v) for v in row[4:9]]
        world[i, j] = [_cell(v) for v in row[9:12]]
    return PoseSeries(frames, times, image, world)


def read_json(path: str | os.PathLike[str]) -> PoseSeries:
    """Read a JSON pose export back into a :class:`PoseSeries`.

    Raises:
        ExportError: not a climbd pose JSON of a known version.
    """
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("format") != JSON_FORMAT or doc.get("version") != JSON_VERSION:
        raise ExportError(f"{path}: not a climbd pose JSON (version {JSON_VERSION})")
    fr = doc["frames"]

    def arr(key: str, cols: int) -> np.ndarray:
        if not fr:
            return np.zeros((0, NUM_LANDMARKS, cols), np.float32)
        return np.array([[[math.nan if v is None else v for v in lm] for lm in f[key]]
                         for f in fr], np.float32)

    return PoseSeries(np.array([f["frame"] for f in fr], np.int32),
                      np.array([f["t_s"] for f in fr], np.float64),
                      arr("image", 5), arr("world", 3))
