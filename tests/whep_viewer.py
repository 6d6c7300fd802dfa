"""A receive-only WHEP viewer in Python (aiortc) for tests and benchmarks (moved out of the
package: the appliance never runs it).

It does the WebRTC half of a viewer; the HTTP half (POST the offer, DELETE the session) is up
to the caller, so this package stays free of HTTP code::

    viewer = Viewer(host_candidates=["127.0.0.1"])
    offer = await viewer.offer()
    answer = ...  # POST offer to /api/whep, read the 201 body
    await viewer.accept(answer)
    await viewer.wait_for(lambda: viewer.frames >= 25, timeout=10)

Every decoded frame is recorded with its RTP timestamp and its arrival time, every landmark
message decoded with its arrival time. With ``decode=False`` the viewer records each frame
when the jitter buffer has reassembled it and skips the H.264 decode (a light load generator:
many viewers in one process without the decode cost of each).

aiortc's receiver normally rebases RTP timestamps to start at 0
(``RTCRtpReceiver.__timestamp_mapper``); the viewer replaces that mapper with the identity so
frame timestamps are the RTP timestamps on the wire, as Chrome's
``requestVideoFrameCallback`` reports them, and can be matched with landmark messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from climbd.streaming.datachannel import LABEL
from climbd.streaming.ice import ice_configuration, restrict_host_candidates
from climbd.streaming.landmarks import LandmarkMessage, decode_message

__all__ = ["ReceivedFrame", "ReceivedMessage", "Viewer"]

_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """A decoded video frame: RTP timestamp, arrival (monotonic s), size in pixels."""

    rtp: int
    arrived: float
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A landmark message, its arrival time (monotonic s) and size in bytes."""

    message: LandmarkMessage
    arrived: float
    size: int


class _CountingQueue:
    """Stands in for ``RTCRtpReceiver.__decoder_queue``: counts frames instead of decoding.

    ``put`` is called on the event loop with ``(codec, JitterFrame)`` for each reassembled
    frame, and with None at stop; the receiver's decoder thread blocks in ``get`` until then.
    """

    def __init__(self, on_frame: Callable[[int], None]):
        self._on_frame = on_frame
        self._end: queue.Queue[None] = queue.Queue()

    def put(self, item: Any) -> None:
        if item is None:
            self._end.put(None)
        else:
            self._on_frame(int(item[1].timestamp))

    def get(self) -> None:
        return self._end.get()


class _IdentityTimestamps:
    def map(self, timestamp: int) -> int:
        return timestamp


class Viewer:
    """A receive-only viewer (see the module docstring).

    Args:
        host_candidates: local addresses to gather ICE candidates on (``["127.0.0.1"]`` keeps
            a test on loopback); empty = aioice's default (every interface but 127.0.0.1).
        landmarks: open the ``landmarks`` data channel (unordered, maxRetransmits 0).
        keep_images: how many decoded frames to keep as RGB arrays (0 = none).
        history: how many frames and messages to keep.
        decode: decode the video (else count reassembled frames, see the module docstring).
    """

    def __init__(self, host_candidates: Sequence[str] = ("127.0.0.1",), landmarks: bool = True,
                 keep_images: int = 0, history: int = 2000, decode: bool = True):
        self.pc = RTCPeerConnection(ice_configuration([]))
        self._host_candidates = list(host_candidates)
        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = None
        if landmarks:
            self.channel = self.pc.createDataChannel(LABEL, ordered=False, maxRetransmits=0)
            self.channel.on("message", self._on_message)
        self.received: deque[ReceivedFrame] = deque(maxlen=history)
        self.messages: deque[ReceivedMessage] = deque(maxlen=history)
        self.images: deque[tuple[int, np.ndarray]] = deque(maxlen=max(keep_images, 1))
        self._keep_images = keep_images
        self.texts: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self.frames = 0
        self.message_count = 0
        self.bad_messages = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._decode = decode
        self.pc.on("track", self._on_track)

    # -- signalling ------------------------------------------------------------------------
    async def offer(self) -> str:
        """Create the offer (candidates gathered, none trickled) and return its SDP."""
        if self._host_candidates:
            restrict_host_candidates(self.pc, self._host_candidates)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        """Apply the server's answer; media flows once ICE and DTLS complete."""
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            setattr(receiver, "_RTCRtpReceiver__timestamp_mapper",  # noqa: B010
                    _IdentityTimestamps())
            if not self._decode:
                setattr(receiver, "_RTCRtpReceiver__decoder_queue",  # noqa: B010
                        _CountingQueue(self._on_encoded_frame))
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    # -- media -----------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            now = time.monotonic()
            rtp = int(frame.pts or 0) & _U32
            self.frames += 1
            self.received.append(ReceivedFrame(rtp, now, frame.width, frame.height))
            if self._keep_images:
                self.images.append((rtp, frame.to_ndarray(format="rgb24")))

    def _on_encoded_frame(self, rtp: int) -> None:
        self.frames += 1
        self.received.append(ReceivedFrame(rtp & _U32, time.monotonic(), 0, 0))

    def _on_message(self, data: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(data, str):
            try:
                msg = json.loads(data)
            except ValueError:
                self.bad_messages += 1
                return
            if msg.get("type") == "hello":
                self.hello = msg
            self.texts.append(msg)
            return
        try:
            decoded = decode_message(data)
        except ValueError:
            self.bad_messages += 1
            return
        self.message_count += 1
        self.messages.append(ReceivedMessage(decoded, now, len(data)))

    def send(self, data: str | bytes) -> None:
        """Send a raw message on the landmarks channel (tests of malformed input)."""
        assert self.channel is not None
        self.channel.send(data)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def connection_state(self) -> str:
        """``RTCPeerConnection.connectionState``."""
        return self.pc.connectionState

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` every 50 ms until true (True) or ``timeout`` seconds (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return predicate()

    def matched(self) -> int:
        """Landmark messages whose RTP timestamp equals that of a received video frame."""
        rtps = {f.rtp for f in self.received}
        return sum(1 for m in self.messages if m.message.rtp and m.message.timestamp in rtps)

    async def close(self) -> None:
        """Close the peer connection and stop reading."""
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
