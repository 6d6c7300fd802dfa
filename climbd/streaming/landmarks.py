"""Wire format of the live landmark messages (data channel ``landmarks`` and ``/api/live``).

One pose result travels as one small **binary** message, little-endian, version 1::

    offset size  field
    0      1     kind        0x01 = pose v1
    1      1     flags       bit 0: a person was detected (landmarks follow)
                             bit 1: ``timestamp`` is an RTP timestamp of this viewer's video
                                    (else it is ``pts`` modulo 2**32: no RTP mapping yet, or a
                                    WebSocket client without video)
    2      2     count       number of landmarks that follow (33, or 0 when nothing detected)
    4      4     timestamp   u32, see flag bit 1
    8      4     pts         u32, 90 kHz ticks since the encoder epoch, modulo 2**32
    12     4     frame       u32, capture frame number modulo 2**32
    16     8*n   landmarks   n x (x i16, y i16, z i16, visibility u8, presence u8)

``x, y`` are the *image* landmarks normalised to the frame width/height and ``z`` MediaPipe's
relative depth, all three multiplied by :data:`COORD_SCALE` (1e-4 resolution: 0.07 px on a
720 px frame; range ±3.2767, values outside are clamped). ``visibility`` and ``presence``
are 0..1 scaled to 0..254; 255 means "not available" (the legacy MediaPipe graph never
fills ``presence``). A detected pose is 16 + 33*8 = 280 bytes, an empty one 16 bytes.

The browser matches a message with the frame it displays through ``timestamp``:
``requestVideoFrameCallback`` metadata carries the displayed frame's ``rtpTimestamp``
(WebRTC-extensions), and aiortc stamps every frame of a viewer with
``rtp = (origin + pts) mod 2**32`` where ``origin`` is that sender's random RTP timestamp
origin (RFC 3550 §5.1: "the initial value of the timestamp SHOULD be random").

Control messages are short JSON *text* messages (``{"type": "hello", ...}`` etc.); see
:func:`hello_message`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from climbd.pose import NUM_LANDMARKS, POSE_CONNECTIONS, Pose

__all__ = [
    "COORD_SCALE",
    "FLAG_DETECTED",
    "FLAG_RTP",
    "HEADER",
    "KIND_POSE",
    "LandmarkFrame",
    "LandmarkMessage",
    "decode_message",
    "encode_landmarks",
    "hello_message",
    "pack_message",
]

#: Message kind of a pose (first byte).
KIND_POSE = 0x01
#: Flag bit: landmarks follow.
FLAG_DETECTED = 0x01
#: Flag bit: the timestamp field is an RTP timestamp of the receiving viewer's video.
FLAG_RTP = 0x02
#: Fixed header: kind, flags, count, timestamp, pts, frame.
HEADER = struct.Struct("<BBHIII")
#: x, y, z fixed-point scale (value = round(coordinate * COORD_SCALE)).
COORD_SCALE = 10_000
_U32 = 0xFFFFFFFF
_NOT_AVAILABLE = 255

_LANDMARK_DTYPE = np.dtype(
    [("x", "<i2"), ("y", "<i2"), ("z", "<i2"), ("visibility", "u1"), ("presence", "u1")]
)
assert _LANDMARK_DTYPE.itemsize == 8


@dataclass(frozen=True, slots=True)
class LandmarkFrame:
    """One pose result, encoded once and shared by every recipient.

    Attributes:
        pts: presentation time of the matching video packet, 90 kHz ticks since the encoder
            epoch (not wrapped).
        frame_number: capture frame number.
        timestamp: monotonic capture time, seconds.
        body: the encoded landmarks (``8 * count`` bytes; empty when nothing was detected).
        count: number of landmarks in ``body``.
    """

    pts: int
    frame_number: int
    timestamp: float
    body: bytes
    count: int

    @property
    def detected(self) -> bool:
        """True when landmarks follow the header."""
        return self.count > 0

    @classmethod
    def from_pose(cls, pose: Pose, pts: int) -> LandmarkFrame:
        """Encode ``pose`` (its image landmarks) for the packet with presentation time ``pts``."""
        if pose.image is None:
            return cls(pts, pose.frame_number, pose.timestamp, b"", 0)
        return cls(pts, pose.frame_number, pose.timestamp, encode_landmarks(pose.image),
                   len(pose.image))


def encode_landmarks(image: np.ndarray) -> bytes:
    """Pack ``(n, 5)`` image landmarks ``x, y, z, visibility, presence`` into ``8 * n`` bytes.

    Raises:
        ValueError: ``image`` is not ``(n, 5)`` with ``n <= 65535``.
    """
    if image.ndim != 2 or image.shape[1] != 5 or image.shape[0] > 0xFFFF:
        raise ValueError(f"expected (n, 5) image landmarks, got {image.shape}")
    out = np.empty(image.shape[0], _LANDMARK_DTYPE)
    xyz = np.nan_to_num(image[:, :3].astype(np.float64), nan=0.0) * COORD_SCALE
    xyz = np.clip(np.rint(xyz), -32768, 32767).astype(np.int16)
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for name, col in (("visibility", 3), ("presence", 4)):
        v = image[:, col].astype(np.float64)
        q = np.rint(np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0) * 254)
        out[name] = np.where(np.isnan(v), _NOT_AVAILABLE, q).astype(np.uint8)
    return out.tobytes()


def pack_message(frame: LandmarkFrame, rtp_origin: int | None) -> bytes:
    """The binary message of ``frame`` for one recipient.

    Args:
        frame: the shared encoded pose.
        rtp_origin: the recipient's RTP timestamp origin, or None (then the timestamp field
            carries ``pts`` and flag bit 1 is clear).
    """
    flags = FLAG_DETECTED if frame.count else 0
    if rtp_origin is None:
        ts = frame.pts & _U32
    else:
        ts = (rtp_origin + frame.pts) & _U32
        flags |= FLAG_RTP
    return HEADER.pack(KIND_POSE, flags, frame.count, ts, frame.pts & _U32,
                       frame.frame_number & _U32) + frame.body


@dataclass(frozen=True, slots=True)
class LandmarkMessage:
    """A decoded binary landmark message (tests, benchmarks, Python clients).

    ``landmarks`` is ``(count, 5)`` float32 ``x, y, z, visibility, presence`` with NaN for
    "not available", or None when nothing was detected.
    """

    timestamp: int
    rtp: bool
    pts: int
    frame_number: int
    landmarks: np.ndarray | None


def decode_message(data: bytes) -> LandmarkMessage:
    """Decode one binary landmark message.

    Raises:
        ValueError: too short, unknown kind, or a length that does not match ``count``.
    """
    if len(data) < HEADER.size:
        raise ValueError(f"landmark message too short: {len(data)} bytes")
    kind, flags, count, ts, pts, frame = HEADER.unpack_from(data)
    if kind != KIND_POSE:
        raise ValueError(f"unknown landmark message kind {kind:#x}")
    if len(data) != HEADER.size + count * _LANDMARK_DTYPE.itemsize:
        raise ValueError(f"landmark message of {len(data)} bytes does not hold {count} points")
    landmarks = None
    if flags & FLAG_DETECTED:
        raw = np.frombuffer(data, _LANDMARK_DTYPE, count, HEADER.size)
        landmarks = np.empty((count, 5), np.float32)
        for i, name in enumerate(("x", "y", "z")):
            landmarks[:, i] = raw[name] / COORD_SCALE
        for i, name in ((3, "visibility"), (4, "presence")):
            col = raw[name].astype(np.float32) / 254
            landmarks[:, i] = np.where(raw[name] == _NOT_AVAILABLE, np.nan, col)
    return LandmarkMessage(ts, bool(flags & FLAG_RTP), pts, frame, landmarks)


def hello_message(
    *,
    rtp_origin: int | None,
    epoch: float | None,
    width: int | None,
    height: int | None,
    fps: float | None,
    delay_s: float = 0.0,
) -> str:
    """The JSON ``hello`` text message a recipient gets on connect and every few seconds.

    Fields: ``v`` format version; ``clock_rate`` 90000 (RFC 3551 §5, video); ``rtp_origin``
    this viewer's RTP timestamp origin (``rtp = (rtp_origin + pts) mod 2**32``) or null;
    ``epoch`` the monotonic capture time of ``pts == 0`` in seconds (``capture time = epoch +
    pts / 90000``; meaningful only to clients on the same host, e.g. the benchmark);
    ``width``/``height``/``fps`` of the video; ``scale`` the fixed-point scale of x, y, z;
    ``landmarks`` 33 and ``connections`` the skeleton edges (MediaPipe ``POSE_CONNECTIONS``);
    ``delay_s`` seconds between capture and sending (0 live; N on the delayed view, whose
    frames were captured at ``epoch + pts / 90000`` and are sent ``delay_s`` later).
    """
    msg: dict[str, Any] = {
        "type": "hello",
        "v": 1,
        "clock_rate": 90_000,
        "rtp_origin": rtp_origin,
        "epoch": None if epoch is None or not math.isfinite(epoch) else round(epoch, 6),
        "width": width,
        "height": height,
        "fps": fps,
        "delay_s": delay_s,
        "scale": COORD_SCALE,
        "landmarks": NUM_LANDMARKS,
        "connections": POSE_CONNECTIONS,
    }
    return json.dumps(msg, separators=(",", ":"))
