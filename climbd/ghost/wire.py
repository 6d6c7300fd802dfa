"""The ghost's wire format: binary ghost poses (server → client) and JSON control
messages (client → server).

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
    {"type": "ghost", "action": "arm", "session_id": 12, "at": "recording"}      (the same)
    {"type": "ghost", "action": "arm", "session_id": 12, "at": "lift-off",
     "attempt": 1, "repeat": true}            start when the live climber leaves the ground

``arm`` is how a ghost starts "at the press of record": the ghost waits at 0 and, as soon as
a recording runs, is anchored on that recording's first frame (its capture time, which may
lie in the pre-roll), so ghost time = new session time for every live frame.

``arm`` with ``"at": "lift-off"`` races one *attempt* of the ghost session against the
live climber. ``attempt`` is the attempt's 0-based ``index`` in the ghost session (as in
``GET /api/sessions/{id}/attempts``; default 0, the first). The ghost waits at that
attempt's ``start_s`` until the live attempt detector reports a lift-off captured at or
after the moment the ``arm`` was applied (an earlier one is ignored), then is anchored so the
two lift-offs coincide::

    ghost session time = start_s + (live capture time - live lift-off time) * speed

The detector confirms a lift-off about 1 s after it happened, so the anchor lies in the
past, as in the pre-roll case of a recording ``arm``: the rows of that second are passed
over and the ghost is shown where it is due now. The race ends at the attempt's ``end_s``
(the session's end if the attempt runs to it); the ghost then stays there, ``ended``, or,
with ``"repeat": true``, goes back to ``start_s`` and waits for the next lift-off (every
live attempt races the same ghost attempt; a lift-off during a race restarts it). A race
does not loop. A session without that attempt is refused with an ``error`` of code
``ghost-no-attempt``, and a lift-off arm while live pose is off or failed (nothing could
see the climber leave the ground) with ``ghost-no-liftoff``; nothing else changes. Any
control but ``speed`` and ``state`` ends an ``arm`` of either kind (and a race).

Server → client: ``ghost_state`` (after every control and every second while a ghost is
loaded: the data channel is lossy, so state is repeated rather than acknowledged once) and
``error`` ``{"code", "error", "seq"}`` for a control that cannot be applied.

``ghost_state`` fields: ``state`` (``stopped``, ``paused``, ``playing``, ``ended``, or
``armed`` while waiting for a recording or a lift-off), ``session_id``, ``name``, ``t`` (s),
``duration`` (s), ``fps``, ``speed``, ``loop``, ``aligned_to`` (the recording a
recording-``arm`` started with), ``arm_at`` (``"recording"``, ``"lift-off"`` or null: how
the ghost was armed; kept while a lift-off race plays) and ``race`` (null, or for a lift-off
arm ``{"attempt", "start_s", "end_s", "repeat", "liftoff_at", "races"}``: the ghost attempt's
index and span in session seconds, whether it re-arms, the monotonic capture time (s) of the
live lift-off it is racing (null while waiting) and how many races started).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from climbd.streaming.landmarks import encode_landmarks

__all__ = ["FLAG_DETECTED", "FLAG_RTP", "FLAG_STILL", "GHOST_HEADER", "KIND_GHOST",
           "GhostControl", "GhostMessage", "decode_ghost", "pack_ghost"]

#: First byte of a ghost pose message.
KIND_GHOST = 0x02
FLAG_DETECTED = 0x01
FLAG_RTP = 0x02
FLAG_STILL = 0x04
#: kind, flags, count, timestamp, t_ms, frame.
GHOST_HEADER = struct.Struct("<BBHIII")
_U32 = 0xFFFFFFFF




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
    #: for ``arm``: start with the next recording (default) or at the next live lift-off
    at: Literal["recording", "lift-off"] | None = None
    #: for ``arm`` at lift-off: the ghost session's attempt index (0-based) to race
    attempt: int | None = Field(None, ge=0, le=100_000)
    #: for ``arm`` at lift-off: wait for the next lift-off again after each race
    repeat: bool | None = None
    t: float | None = Field(None, ge=0, allow_inf_nan=False)
    speed: float | None = Field(None, allow_inf_nan=False)
    loop: bool | None = None
    seq: int | None = Field(None, ge=0, le=2**53)


# -- the async player ----------------------------------------------------------------------
