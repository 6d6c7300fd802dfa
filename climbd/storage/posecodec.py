"""Compact, versioned binary chunks of pose landmarks (pure functions, numpy only).

A recording stores its poses as *chunks*: one SQLite row holds about one second of frames
(see :meth:`climbd.storage.Database.append_poses`), never one row per frame. A chunk is the
bytes produced by :func:`encode_chunk`; :func:`decode_chunk` turns it back into a
:class:`PoseSeries`.

Format version 2 (written by the database since schema 7: quantized, 474 bytes a frame)::

    offset  size        field
    0       4           magic b"CPS1"
    4       1           version (2)
    5       1           flags (0, reserved)
    6       2           reserved (0)
    8       4           n (uint32), number of frames
    12      4           CRC-32 (zlib) of the body below
    16      8 n         times, float64, seconds from session start (exact)
            4 n         frames, int32, session frame index (exact)
            132 n       image x, y, uint16, (n, 33, 2): q = round((v + 4) * 65534 / 9)
            66 n        image z, int16, (n, 33): q = round(z * 2048)
            198 n       world x, y, z, int16 millimetres, (n, 33, 3)
            66 n        image visibility, presence, uint8, (n, 33, 2): q = round(v * 254)

Error bounds (half a quantization step; values are clipped to the ranges):

- image x, y: normalised range -4..5 (BlazePose puts landmarks it cannot see, e.g. legs
  below the frame, well outside it: values to -1.5 and 2.5 were measured on the test
  clips), step 9 / 65534 = 1.37e-4, so |error| <= 6.9e-5 of the frame width/height: 0.09 px
  on a 1280x720 frame. 65535 is NaN.
- image z: range -16..16 (BlazePose's z is on the scale of x), |error| <= 2.45e-4.
  -32768 is NaN.
- world x, y, z: range +-32.767 m (hip-centred, a person is < 2 m from the hips), |error|
  <= 0.5 mm. -32768 is NaN (also a frame without world landmarks).
- visibility, presence: 0..1, step 1/254, |error| <= 1.97e-3. 255 is NaN (``presence`` is
  always NaN with the legacy MediaPipe graph).

Format version 1 (936 bytes a frame: times f64, frames i32, image x, y, z f32, world x, y, z
f32 metres, visibility/presence f16) is what databases written before schema 7 hold and
what the HTTP API's ``format=bin`` pose windows still send (the browser decodes it; see
:data:`WIRE_VERSION`): :func:`decode_chunk` reads both, :func:`encode_chunk` writes either.
Old chunks stay as they are (no migration rewrites them).
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
    "BYTES_PER_FRAME_V1",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "NUM_LANDMARKS",
    "WIRE_VERSION",
    "PoseSeries",
    "decode_chunk",
    "encode_chunk",
]

#: Number of BlazePose landmarks per frame.
NUM_LANDMARKS = 33
#: Version written by :func:`encode_chunk` by default (the database's); :func:`decode_chunk`
#: reads this one and version 1 and rejects any other.
FORMAT_VERSION = 2
#: Version of the HTTP API's binary pose windows (what the web UI decodes): version 1.
WIRE_VERSION = 1
_MAGIC = b"CPS1"
_HEADER = struct.Struct("<4sBBHII")
#: Size of a chunk's header, bytes.
HEADER_SIZE = _HEADER.size
_L = NUM_LANDMARKS
#: Size of one frame in a version 1 body, bytes: times, frames, image xyz, world, vis/presence.
BYTES_PER_FRAME_V1 = 8 + 4 + _L * 3 * 4 + _L * 3 * 4 + _L * 2 * 2
#: Size of one frame in a version 2 body, bytes (quantized, see the module docstring).
BYTES_PER_FRAME_V2 = 8 + 4 + _L * 2 * 2 + _L * 2 + _L * 3 * 2 + _L * 2
#: Bytes per frame of :data:`FORMAT_VERSION`.
BYTES_PER_FRAME = BYTES_PER_FRAME_V2
_FRAME_SIZE = {1: BYTES_PER_FRAME_V1, 2: BYTES_PER_FRAME_V2}

_XY_OFFSET, _XY_SCALE, _XY_NAN = 4.0, 65534 / 9, 65535
_Z_SCALE, _I16_NAN = 2048.0, -32768
_MM = 1000.0
_P_SCALE, _P_NAN = 254.0, 255


def _q(values: np.ndarray, scale: float, offset: float, lo: int, hi: int, nan: int,
       dtype: str) -> np.ndarray:
    """Quantize: round((v + offset) * scale) clipped to lo..hi; NaN -> ``nan``."""
    v = np.asarray(values, np.float64)
    bad = ~np.isfinite(v)
    q = np.clip(np.rint((np.where(bad, 0.0, v) + offset) * scale), lo, hi)
    q[bad] = nan
    return q.astype(dtype)


def _dq(q: np.ndarray, scale: float, offset: float, nan: int) -> np.ndarray:
    out = q.astype(np.float32) / np.float32(scale) - np.float32(offset)
    out[q == nan] = np.nan
    return out


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

    def encode(self, version: int = FORMAT_VERSION) -> bytes:
        """This series as one chunk of format ``version`` (see :func:`encode_chunk`)."""
        return encode_chunk(self.frames, self.times, self.image, self.world, version=version)


def encode_chunk(frames: np.ndarray, times: np.ndarray, image: np.ndarray,
                 world: np.ndarray, *, version: int = FORMAT_VERSION) -> bytes:
    """Pack ``n`` poses into one chunk: ``16 + 474 n`` bytes (version 2, quantized with the
    error bounds of the module docstring) or ``16 + 936 n`` (version 1).

    Args:
        frames: ``(n,)`` session frame indices (cast to int32).
        times: ``(n,)`` seconds from session start, non-decreasing (float64).
        image: ``(n, 33, 5)`` image landmarks ``x, y, z, visibility, presence``; x, y, z
            are stored as float32, visibility and presence as float16.
        world: ``(n, 33, 3)`` world landmarks in metres (float32).
        version: 2 (default, the database) or 1 (the HTTP wire format).

    Raises:
        ValueError: shapes disagree, a frame index does not fit int32, times decrease, or
            an unknown version.
    """
    if version not in _FRAME_SIZE:
        raise ValueError(f"unknown pose chunk format version {version}")
    frames_arr = np.asarray(frames)
    if frames_arr.size and (frames_arr.min() < np.iinfo(np.int32).min
                            or frames_arr.max() > np.iinfo(np.int32).max):
        raise ValueError("frame index out of int32 range")
    series = PoseSeries(frames_arr, times, image, world)
    if len(series) > 1 and bool(np.any(np.diff(series.times) < 0)):
        raise ValueError("pose times must be non-decreasing")
    head = (series.times.astype("<f8", copy=False).tobytes(),
            series.frames.astype("<i4", copy=False).tobytes())
    if version == 1:
        body = b"".join((
            *head,
            series.image[:, :, :3].astype("<f4").tobytes(),
            series.world.astype("<f4", copy=False).tobytes(),
            series.image[:, :, 3:].astype("<f2").tobytes(),
        ))
    else:
        body = b"".join((
            *head,
            _q(series.image[:, :, :2], _XY_SCALE, _XY_OFFSET, 0, _XY_NAN - 1, _XY_NAN,
               "<u2").tobytes(),
            _q(series.image[:, :, 2], _Z_SCALE, 0.0, -32767, 32767, _I16_NAN, "<i2").tobytes(),
            _q(series.world, _MM, 0.0, -32767, 32767, _I16_NAN, "<i2").tobytes(),
            _q(series.image[:, :, 3:], _P_SCALE, 0.0, 0, 254, _P_NAN, "u1").tobytes(),
        ))
    header = _HEADER.pack(_MAGIC, version, 0, 0, len(series), zlib.crc32(body))
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
    if version not in _FRAME_SIZE:
        raise StorageError(f"unknown pose chunk format version {version} "
                           f"(this climbd reads versions 1 and {FORMAT_VERSION})")
    expected = HEADER_SIZE + n * _FRAME_SIZE[version]
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
    image = np.empty((n, _L, 5), np.float32)
    if version == 1:
        image[:, :, :3] = take("<f4", (n, _L, 3))
        world = take("<f4", (n, _L, 3)).astype(np.float32)
        image[:, :, 3:] = take("<f2", (n, _L, 2))
    else:
        image[:, :, :2] = _dq(take("<u2", (n, _L, 2)), _XY_SCALE, _XY_OFFSET, _XY_NAN)
        image[:, :, 2] = _dq(take("<i2", (n, _L)), _Z_SCALE, 0.0, _I16_NAN)
        world = _dq(take("<i2", (n, _L, 3)), _MM, 0.0, _I16_NAN)
        image[:, :, 3:] = _dq(take("u1", (n, _L, 2)), _P_SCALE, 0.0, _P_NAN)
    return PoseSeries(frames, times, image, world)
