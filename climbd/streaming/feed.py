"""Pose results matched with their video packets and encoded once for every live client.

The pose and encode stages run on separate threads, so a pose result and the packet of the
same frame reach the event loop in either order. :class:`LandmarkFeed` watches both
broadcasts, maps each pose to its packet's ``pts`` through the frame number (the packet's
``pts`` is what the viewer's RTP timestamp is derived from), encodes it once
(:class:`~climbd.streaming.landmarks.LandmarkFrame`) and publishes it on :attr:`frames`, which
every data channel and WebSocket client subscribes to. It also tells the keyframe governor
about every keyframe the encoder emits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from typing import Any, Protocol

from climbd.broadcast import Broadcast, Subscription
from climbd.pose import Pose
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.streaming.landmarks import LandmarkFrame
from climbd.video import CLOCK_RATE, EncodedPacket, VideoStreamInfo

__all__ = ["LandmarkFeed", "LandmarkSource"]

log = logging.getLogger(__name__)

#: Frame-number → pts entries remembered (≈10 s at 30 fps; poses lag far less).
PTS_MEMORY = 300
#: Seconds a pose waits for its packet before it is dropped (the encoder dropped that frame).
POSE_WAIT_S = 1.0


class LandmarkSource(Protocol):
    """What a landmark data channel reads: :class:`LandmarkFeed` (live) or
    :class:`~climbd.streaming.delay.DelayLine` (delayed view)."""

    frames: Broadcast[LandmarkFrame]
    info: VideoStreamInfo | None
    epoch: float | None
    #: seconds between capture and display of this stream (0 for the live feed)
    delay_s: float


class LandmarkFeed:
    """Encoded landmark frames for all live clients (see the module docstring).

    Args:
        packets: the daemon's packet broadcast.
        poses: the daemon's pose broadcast.
        keyframes: told about every keyframe.
        loop: the event loop (for :attr:`frames`).

    Attributes:
        frames: encoded poses, in pose order; subscribe with ``policy="latest"``.
        info: parameters of the video stream (None before the first packet).
        epoch: monotonic capture time of ``pts == 0`` (from the first packet), seconds.
        last_pts: ``pts`` of the newest packet.
    """

    def __init__(self, packets: Broadcast[EncodedPacket], poses: Broadcast[Pose],
                 keyframes: KeyframeGovernor, loop: asyncio.AbstractEventLoop):
        self._packets = packets
        self._poses = poses
        self._keyframes = keyframes
        self.frames: Broadcast[LandmarkFrame] = Broadcast(loop)
        self.delay_s = 0.0
        self.info: VideoStreamInfo | None = None
        self.epoch: float | None = None
        self.last_pts: int | None = None
        self._pts: OrderedDict[int, int] = OrderedDict()
        self._waiting: deque[tuple[float, Pose]] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self.matched = 0
        self.unmatched = 0
        self.encode_s = 0.0

    def start(self) -> None:
        """Subscribe to the broadcasts (call on the event loop)."""
        if self._tasks:
            return
        packet_sub = self._packets.subscribe(maxsize=256, policy="latest")
        pose_sub = self._poses.subscribe(maxsize=64, policy="latest")
        self._tasks = [
            asyncio.create_task(self._packet_loop(packet_sub), name="live-feed-packets"),
            asyncio.create_task(self._pose_loop(pose_sub), name="live-feed-poses"),
        ]

    async def close(self) -> None:
        """Stop and close :attr:`frames` (subscribers see end of stream)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        self.frames.close()

    def capture_time(self, pts: int) -> float | None:
        """Monotonic capture time of the packet with presentation time ``pts``, seconds."""
        return None if self.epoch is None else self.epoch + pts / CLOCK_RATE

    async def _packet_loop(self, sub: Subscription[EncodedPacket]) -> None:
        try:
            async for packet in sub:
                if self.epoch is None:
                    self.epoch = packet.timestamp - packet.pts / CLOCK_RATE
                self.info = packet.info
                self.last_pts = packet.pts
                if packet.keyframe:
                    self._keyframes.saw_keyframe()
                self._pts[packet.frame_number] = packet.pts
                if len(self._pts) > PTS_MEMORY:
                    self._pts.popitem(last=False)
                if self._waiting:
                    self._release_waiting()
        finally:
            sub.close()

    async def _pose_loop(self, sub: Subscription[Pose]) -> None:
        try:
            async for pose in sub:
                if self._waiting:
                    self._release_waiting()
                pts = self._pts.get(pose.frame_number)
                if pts is None:
                    self._waiting.append((time.monotonic(), pose))
                    continue
                self._publish(pose, pts)
        finally:
            sub.close()

    def _release_waiting(self) -> None:
        now = time.monotonic()
        while self._waiting:
            since, pose = self._waiting[0]
            pts = self._pts.get(pose.frame_number)
            if pts is not None:
                self._waiting.popleft()
                self._publish(pose, pts)
            elif now - since > POSE_WAIT_S:
                self._waiting.popleft()
                self.unmatched += 1
            else:
                break

    def _publish(self, pose: Pose, pts: int) -> None:
        self.matched += 1
        if not self.frames.subscribers:
            return  # nobody listens: skip the encode
        t0 = time.perf_counter()
        frame = LandmarkFrame.from_pose(pose, pts)
        self.encode_s += time.perf_counter() - t0
        self.frames.publish(frame)

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict."""
        return {"matched": self.matched, "unmatched": self.unmatched,
                "listeners": self.frames.subscribers}
