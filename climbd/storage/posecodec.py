"""Compact, versioned binary chunks of pose landmarks (pure functions, numpy only).

A recording stores its poses as *chunks*: one SQLite row holds about one second of frames
(see :meth:`climbd.storage.Database.append_poses`), never one row per frame. A chunk is the
bytes produced by :func:`encode_chunk`; :func:`decode_chunk` turns it back into a
:class:`PoseSeries`.

Layout of format version 1 (every field little-endian, ``n`` frames)::

    offset  size        field
    0       4           magic b"CPS1"
    4       1           version (1)
    5       1           flags (0, reserved)
    6       2           reserved (0)
    8       4           n (uint32), number of frames
    12      4           CRC-32 (zlib) of the body below
    16      8 n         times, float64, seconds from session start
            4 n         frames, int32, session frame index
            396 n       image x, y, z, float32, (n, 33, 3)
            396 n       world x, y, z, float32 metres, (n, 33, 3)
            132 n       image visibility, presence, float16, (n, 33, 2)

That is :data:`BYTES_PER_FRAME` = 936 bytes per frame plus a :data:`HEADER_SIZE` = 16 byte
header per chunk. ``visibility`` and ``presence`` are probabilities in 0..1, for which float16
keeps an absolute error below 5e-4; NaN (``presence`` is always NaN with the legacy MediaPipe
graph) survives the round trip. Every other field round-trips exactly.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from climbd.errors import StorageError

if TYPE_CHECKING:
    from climbd.pose import Pose

__all__ = [
    "BYTES_PER_FRAME",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "NUM_LANDMARKS",
    "PoseSeries",
    "decode_chunk",
    "encode_chunk",
]

#: Number of BlazePose landmarks per frame.
NUM_LANDMARKS = 33
#: Version written by :func:`encode_chunk`; :func:`decode_chunk` rejects any other.
FORMAT_VERSION = 1
_MAGIC = b"CPS1"
_HEADER = struct.Struct("<4sBBHII")
#: Size of a chunk's header, bytes.
HEADER_SIZE = _HEADER.size
_L = NUM_LANDMARKS
#: Size of one frame in a chunk's body, bytes: times, frames, image xyz, world, vis/presence.
BYTES_PER_FRAME = 8 + 4 + _L * 3 * 4 + _L * 3 * 4 + _L * 2 * 2


@dataclass(frozen=True, eq=False)
class PoseSeries:
    """A time series of poses: the frames of a session (or part of one) that have a pose.

    Attributes:
        frames: ``(n,)`` int32 session frame index of each pose (0 = the session's first
            video frame).
        times: ``(n,)`` float64 seconds from the session start, non-decreasing.
        image: ``(n, 33, 5)`` float32 image landmarks ``x, y`` (normalised to the frame
            width/height), ``z``, ``visibility``, ``presence`` (NaN when not provided).
        world: ``(n, 33, 3)`` float32 world landmarks, metres, hip-centred.

    The arrays are converted to those dtypes on construction.

    Raises:
        ValueError: the shapes do not agree with each other or with the layout above.
    """

    frames: np.ndarray
    times: np.ndarray
    image: np.ndarray
    world: np.ndarray

    def __post_init__(self) -> None:
        frames = np.ascontiguousarray(self.frames, dtype=np.int32)
        times = np.ascontiguousarray(self.times, dtype=np.float64)
        image = np.ascontiguousarray(self.image, dtype=np.float32)
        world = np.ascontiguousarray(self.world, dtype=np.float32)
        n = frames.shape[0] if frames.ndim == 1 else -1
        expected: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {
            "frames": (frames, (n,)),
            "times": (times, (n,)),
            "image": (image, (n, _L, 5)),
            "world": (world, (n, _L, 3)),
        }
        for name, (arr, shape) in expected.items():
            if n < 0 or arr.shape != shape:
                raise ValueError(
                    f"PoseSeries.{name} must have shape {shape if n >= 0 else '(n,)'}, "
                    f"got {arr.shape}"
                )
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "world", world)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        if len(self) == 0:
            return "PoseSeries(n=0)"
        return (f"PoseSeries(n={len(self)}, frames {self.frames[0]}..{self.frames[-1]}, "
                f"t {self.times[0]:.3f}..{self.times[-1]:.3f} s)")

    @classmethod
    def empty(cls) -> PoseSeries:
        """A series of zero poses."""
        return cls(
            np.zeros(0, np.int32), np.zeros(0, np.float64),
            np.zeros((0, _L, 5), np.float32), np.zeros((0, _L, 3), np.float32),
        )

    @classmethod
    def concat(cls, parts: Sequence[PoseSeries]) -> PoseSeries:
        """Join series end to end (in the given order; they should already be in time order).

        Returns an empty series when ``parts`` is empty.
        """
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.times for p in parts]),
            np.concatenate([p.image for p in parts]),
            np.concatenate([p.world for p in parts]),
        )

    @classmethod
    def from_poses(cls, poses: Iterable[Pose], *, time_origin: float,
                   frame_origin: int = 0) -> PoseSeries:
        """Build a series from :class:`climbd.pose.Pose` results, skipping frames without a
        person.

        Args:
            poses: results in capture order.
            time_origin: monotonic time (seconds) of the session's first frame; subtracted
                from each ``Pose.timestamp``.
            frame_origin: capture frame number of the session's first frame; subtracted from
                each ``Pose.frame_number``.
        """
        kept = [p for p in poses if p.image is not None]
        if not kept:
            return cls.empty()
        nan_world = np.full((_L, 3), np.nan, np.float32)
        return cls(
            np.array([p.frame_number - frame_origin for p in kept], np.int32),
            np.array([p.timestamp - time_origin for p in kept], np.float64),
            np.stack([p.image for p in kept if p.image is not None]),
            np.stack([nan_world if p.world is None else p.world for p in kept]),
        )

    def slice_time(self, start: float | None = None, end: float | None = None) -> PoseSeries:
        """The poses with ``start <= time < end`` (seconds from session start).

        ``None`` leaves that side open. The half-open interval lets a client fetch
        consecutive windows without getting a frame twice. Requires ``times`` sorted.
        """
        lo = 0 if start is None else int(np.searchsorted(self.times, start, side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.times, end, side="left"))
        hi = max(lo, hi)
        if lo == 0 and hi == len(self):
            return self
        return PoseSeries(self.frames[lo:hi], self.times[lo:hi], self.image[lo:hi],
                          self.world[lo:hi])

    def encode(self) -> bytes:
        """This series as one chunk (see :func:`encode_chunk`)."""
        return encode_chunk(self.frames, self.times, self.image, self.world)


def encode_chunk(frames: np.ndarray, times: np.ndarray, image: np.ndarray,
                 world: np.ndarray) -> bytes:
    """Pack ``n`` poses into one chunk of ``16 + 936 n`` bytes (format version 1).

    Args:
        frames: ``(n,)`` session frame indices (cast to int32).
        times: ``(n,)`` seconds from session start, non-decreasing (float64).
        image: ``(n, 33, 5)`` image landmarks ``x, y, z, visibility, presence``; x, y, z
            are stored as float32, visibility and presence as float16.
        world: ``(n, 33, 3)`` world landmarks in metres (float32).

    Raises:
        ValueError: shapes disagree, a frame index does not fit int32, or times decrease.
    """
    frames_arr = np.asarray(frames)
    if frames_arr.size and (frames_arr.min() < np.iinfo(np.int32).min
                            or frames_arr.max() > np.iinfo(np.int32).max):
        raise ValueError("frame index out of int32 range")
    series = PoseSeries(frames_arr, times, image, world)
    if len(series) > 1 and bool(np.any(np.diff(series.times) < 0)):
        raise ValueError("pose times must be non-decreasing")
    body = b"".join((
        series.times.astype("<f8", copy=False).tobytes(),
        series.frames.astype("<i4", copy=False).tobytes(),
        series.image[:, :, :3].astype("<f4").tobytes(),
        series.world.astype("<f4", copy=False).tobytes(),
        series.image[:, :, 3:].astype("<f2").tobytes(),
    ))
    header = _HEADER.pack(_MAGIC, FORMAT_VERSION, 0, 0, len(series), zlib.crc32(body))
    return header + body


def decode_chunk(blob: bytes | bytearray | memoryview) -> PoseSeries:
    """Unpack a chunk made by :func:`encode_chunk` (returns arrays that own their memory).

    Raises:
        StorageError: the blob is truncated or corrupt (bad magic, size or checksum) or has
            a format version this climbd does not know.
    """
    data = memoryview(blob).cast("B")
    if len(data) < HEADER_SIZE:
        raise StorageError(f"pose chunk truncated: {len(data)} bytes, header needs "
                           f"{HEADER_SIZE}")
    magic, version, _flags, _reserved, n, crc = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        raise StorageError(f"not a pose chunk (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise StorageError(f"unknown pose chunk format version {version} "
                           f"(this climbd reads version {FORMAT_VERSION})")
    expected = HEADER_SIZE + n * BYTES_PER_FRAME
    if len(data) != expected:
        raise StorageError(f"pose chunk of {n} frames should be {expected} bytes, "
                           f"got {len(data)} (truncated or corrupt)")
    body = data[HEADER_SIZE:]
    if zlib.crc32(body) != crc:
        raise StorageError("pose chunk checksum mismatch (corrupt)")

    offset = 0

    def take(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        nonlocal offset
        count = int(np.prod(shape))
        arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += arr.nbytes
        return arr

    times = take("<f8", (n,)).astype(np.float64)
    frames = take("<i4", (n,)).astype(np.int32)
    xyz = take("<f4", (n, _L, 3))
    world = take("<f4", (n, _L, 3)).astype(np.float32)
    vis_presence = take("<f2", (n, _L, 2))
    image = np.empty((n, _L, 5), np.float32)
    image[:, :, :3] = xyz
    image[:, :, 3:] = vis_presence
    return PoseSeries(frames, times, image, world)
