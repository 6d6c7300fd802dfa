"""Delayed live view: the already-encoded stream replayed N seconds late ("N s ago").

A climber walks back from the wall and watches the screen show the wall as it was N seconds
ago (the "delayed live view" of gym replay products). Nothing is encoded or decoded for it:

- :class:`DelayLine` takes the H.264 packets the daemon already keeps in its pre-roll
  buffer (:class:`climbd.recording.PreRollBuffer`, ``recording.buffer_s`` seconds of whole
  GOPs), starting at the first keyframe captured at or after ``now - N`` (so the first
  picture is due within one GOP and nothing goes out in a burst), and publishes each one
  when ``capture time + N + L`` comes, where ``L`` is the smoothed capture-to-buffer latency
  of the live stream (the encode; ``PreRollBuffer.latency_s``): paced by the packets' own
  monotonic capture timestamps, so frame spacing is the camera's, and N s behind exactly
  what live viewers get;
- each pose in the same buffer is published with the packet of its frame (matched by frame
  number), encoded once per line into the live landmark message format
  (:class:`~climbd.streaming.landmarks.LandmarkFrame`), so the skeleton is delayed exactly
  like the picture and names the same RTP timestamp;
- the published packets keep their 90 kHz ``pts`` while the stream is continuous; when it
  is not (the encoder restarted, the capture timeline jumped), the line shifts every later
  ``pts`` so its output advances by one frame, so a viewer's RTP timestamps
  (``origin + pts``) never jump back or leap.

Viewers of the same N share one line (one pacing task, one packetization per frame, one pose
encode per frame); a line holds references to at most N seconds of packets that the buffer
holds anyway, so its memory is a few pointers per frame. New viewers of a running line start
at its next keyframe (at most one GOP, ``video.keyframe_interval_s``): an IDR cannot be
forced into the past, so PLI/FIR from a delayed viewer wait for the next natural keyframe.

No HTTP here: :mod:`climbd.api.delayed` is the WHEP face.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from climbd.broadcast import Broadcast
from climbd.pose import Pose
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.streaming.landmarks import LandmarkFrame
from climbd.streaming.track import SharedPacketizer
from climbd.video import CLOCK_RATE, EncodedPacket, VideoStreamInfo

__all__ = ["DelayLine", "PacketHistory"]

log = logging.getLogger(__name__)

#: Longest sleep of the pacing task, seconds (it also looks for new packets this often).
POLL_S = 0.05
#: A pts step larger than this (90 kHz ticks, 2 s) or not forward is a discontinuity.
MAX_PTS_STEP = 2 * CLOCK_RATE


class PacketHistory(Protocol):
    """What a delay line reads: the daemon's in-memory buffer (``PreRollBuffer`` fits)."""

    keep_s: float
    #: capture-to-buffer latency of the packets (encode + hand-off), seconds, smoothed
    latency_s: float

    def start_keyframe(self, at: float) -> EncodedPacket | None: ...

    def packets_since(self, packet: EncodedPacket) -> list[EncodedPacket]: ...

    def packets_after(self, t: float) -> list[EncodedPacket]: ...

    def poses_after(self, t: float) -> list[Pose]: ...


class DelayLine:
    """One delayed copy of the live stream, shared by its viewers (module docstring).

    Args:
        history: the daemon's packet and pose buffer.
        delay_s: the delay, seconds (> 0; at most ``history.keep_s`` to be complete).
        loop: the event loop (for the broadcasts).
        gop_s: the encoder's keyframe interval, seconds (for the keyframe governor).
        clock: monotonic clock, seconds (the packets' capture timestamps use the same).

    Attributes:
        packets: the delayed packets (``pts`` continuous), for
            :class:`~climbd.streaming.track.EncodedVideoTrack`.
        frames: the delayed encoded poses, ``pts`` on the same timeline as :attr:`packets`;
            what :class:`~climbd.streaming.datachannel.LandmarkChannel` subscribes to.
        keyframes: a governor that never forces an IDR (there is nothing to force: the past
            is already encoded); it only counts viewers' wishes.
        packetizer: RTP payloads, cut once per frame for every viewer of this line (its own
            cache: a line's ``pts`` may differ from the live stream's).
        info: parameters of the delayed video (None before the first packet).
        epoch: monotonic *capture* time of ``pts == 0`` on this line's timeline, seconds
            (the frame was captured at ``epoch + pts / 90000`` and is shown ``delay_s``
            later).
        released, poses_released, poses_dropped, late: counters (``late``: packets
            released more than one frame after their due time).
    """

    def __init__(self, history: PacketHistory, delay_s: float,
                 loop: asyncio.AbstractEventLoop, gop_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if delay_s <= 0:
            raise ValueError(f"delay_s must be positive, got {delay_s!r}")
        self.delay_s = delay_s
        self._history = history
        self._clock = clock
        self.packets: Broadcast[EncodedPacket] = Broadcast(loop)
        self.frames: Broadcast[LandmarkFrame] = Broadcast(loop)
        self.keyframes = KeyframeGovernor(lambda: None, gop_s=gop_s)
        self.packetizer = SharedPacketizer()
        self.info: VideoStreamInfo | None = None
        self.epoch: float | None = None
        self.viewers = 0
        self._queue: deque[EncodedPacket] = deque()
        self._poses: deque[Pose] = deque()
        self._taken_ts: float | None = None  # capture time of the newest packet taken
        self._taken_pose_ts: float | None = None
        self._offset = 0
        self._last_in: int | None = None
        self._last_out: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.released = 0
        self.poses_released = 0
        self.poses_dropped = 0
        self.late = 0
        self.discontinuities = 0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Take the buffered past and start pacing (call on the event loop)."""
        if self._task is not None:
            return
        self._take_start()
        self._task = asyncio.create_task(self._run(), name=f"delay-line-{self.delay_s:g}s")

    async def close(self) -> None:
        """Stop pacing and end both broadcasts (viewers' tracks see end of stream)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.keyframes.close()
        self.packets.close()
        self.frames.close()
        self._queue.clear()
        self._poses.clear()

    # -- pacing ----------------------------------------------------------------------------
    def _offset_s(self) -> float:
        """Capture time to release time, seconds: the delay plus the live stream's own
        capture-to-viewer latency, so this view is ``delay_s`` behind the live view."""
        return self.delay_s + self._history.latency_s

    def _take_start(self) -> bool:
        """Queue the buffered packets from the first keyframe captured at or after
        ``now - delay_s`` (so the first picture is due now or within one GOP, never
        overdue: no burst). False: no such keyframe buffered yet (retried on the next pull)."""
        at = self._clock() - self._offset_s()
        key = self._history.start_keyframe(at)
        if key is None:
            return False
        packets = self._history.packets_since(key)
        first = next((i for i, p in enumerate(packets) if p.keyframe and p.timestamp >= at),
                     None)
        if first is None:
            return False  # the next keyframe is not captured yet: wait for it (no burst)
        packets = packets[first:]
        self._queue.extend(packets)
        self._taken_ts = packets[-1].timestamp
        self._poses.extend(self._history.poses_after(packets[0].timestamp - 1e-6))
        if self._poses:
            self._taken_pose_ts = self._poses[-1].timestamp
        return True

    def _pull(self) -> None:
        """Take the packets and poses added to the buffer since the last call."""
        if self._taken_ts is None:
            self._take_start()
            return
        new = self._history.packets_after(self._taken_ts)
        if new:
            self._queue.extend(new)
            self._taken_ts = new[-1].timestamp
        since = self._taken_pose_ts
        if since is None and self._queue:
            since = self._queue[0].timestamp - 1e-6
        if since is not None:
            poses = self._history.poses_after(since)
            if poses:
                self._poses.extend(poses)
                self._taken_pose_ts = poses[-1].timestamp

    async def _run(self) -> None:
        while True:
            self._pull()
            if not self._queue:
                await asyncio.sleep(POLL_S)
                continue
            head = self._queue[0]
            wait = head.timestamp + self._offset_s() - self._clock()
            if wait > 0:
                await asyncio.sleep(min(wait, POLL_S))
                continue
            self._queue.popleft()
            fps = head.info.fps or 30.0
            if -wait > 1.0 / fps:
                self.late += 1
            self._release(head)

    def _continuous_pts(self, packet: EncodedPacket) -> int:
        if self._last_in is not None and self._last_out is not None:
            step = packet.pts - self._last_in
            if step <= 0 or step > MAX_PTS_STEP:
                frame = round(CLOCK_RATE / (packet.info.fps or 30.0))
                self._offset = self._last_out + frame - packet.pts
                self.discontinuities += 1
                self.epoch = None
        self._last_in = packet.pts
        out = packet.pts + self._offset
        self._last_out = out
        return out

    def _release(self, packet: EncodedPacket) -> None:
        pts = self._continuous_pts(packet)
        out = packet if pts == packet.pts else dataclasses.replace(packet, pts=pts)
        self.info = packet.info
        if self.epoch is None:
            self.epoch = packet.timestamp - pts / CLOCK_RATE
        if packet.keyframe:
            self.keyframes.saw_keyframe()
        self.released += 1
        self.packets.publish(out)
        poses = self._poses
        while poses and poses[0].timestamp < packet.timestamp:
            poses.popleft()  # its frame has gone out already (the pose came too late)
            self.poses_dropped += 1
        while poses and poses[0].timestamp == packet.timestamp:
            pose = poses.popleft()
            if pose.frame_number != packet.frame_number:
                self.poses_dropped += 1
                continue
            self.poses_released += 1
            if self.frames.subscribers:
                self.frames.publish(LandmarkFrame.from_pose(pose, pts))

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict."""
        return {"delay_s": self.delay_s, "viewers": self.viewers, "queued": len(self._queue),
                "latency_s": round(self._history.latency_s, 4),
                "released": self.released, "late": self.late,
                "poses_released": self.poses_released, "poses_dropped": self.poses_dropped,
                "discontinuities": self.discontinuities,
                "packetizer": {"packetized": self.packetizer.packetized,
                               "reused": self.packetizer.reused}}
