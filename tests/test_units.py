"""Unit tests of the pure parts: pre-roll buffer, latest-wins slot, broadcast fan-out."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from climbd.broadcast import Broadcast
from climbd.pipeline import LatestSlot
from climbd.pose import Pose
from climbd.recording import PreRollBuffer
from climbd.video import EncodedPacket, VideoStreamInfo

pytestmark = pytest.mark.unit

INFO = VideoStreamInfo("h264", 640, 480, 10.0, b"")


def _packets(n: int, fps: float = 10.0, gop: int = 10, t0: float = 100.0) -> list[EncodedPacket]:
    return [EncodedPacket(b"x", i * 9000, t0 + i / fps, i, i % gop == 0, INFO) for i in range(n)]


def _pose(frame: int, t: float) -> Pose:
    return Pose(frame, t, 640, 480, np.zeros((33, 5), np.float32), np.zeros((33, 3), np.float32))


def test_pre_roll_keeps_whole_gops_covering_the_window() -> None:
    buf = PreRollBuffer(keep_s=2.5)
    for p in _packets(100):  # 10 s at 10 fps, keyframe every second
        buf.add_packet(p)
    first = buf.packets[0]
    assert first.keyframe
    newest = buf.packets[-1].timestamp
    # at least keep_s is buffered, and less than keep_s + one GOP
    assert 2.5 <= newest - first.timestamp < 2.5 + 1.0
    assert [p.frame_number for p in buf.packets] == list(range(first.frame_number, 100))


def test_pre_roll_never_starts_mid_gop() -> None:
    buf = PreRollBuffer(keep_s=5)
    for p in _packets(25)[3:]:  # joins at frame 3: nothing until the keyframe at 10
        buf.add_packet(p)
    assert buf.packets[0].frame_number == 10


def test_start_keyframe_picks_latest_at_or_before() -> None:
    buf = PreRollBuffer(keep_s=10)
    for p in _packets(50):
        buf.add_packet(p)
    assert buf.start_keyframe(100 + 2.35).frame_number == 20  # type: ignore[union-attr]
    assert buf.start_keyframe(100 + 3.0).frame_number == 30  # type: ignore[union-attr]
    assert buf.start_keyframe(50.0).frame_number == 0  # before the buffer: the oldest
    assert PreRollBuffer(1).start_keyframe(1.0) is None
    key = buf.start_keyframe(102.0)
    assert key is not None
    assert [p.frame_number for p in buf.packets_since(key)] == list(range(20, 50))


def test_pre_roll_drops_poses_older_than_the_video() -> None:
    buf = PreRollBuffer(keep_s=1.5)
    for p in _packets(40):
        buf.add_packet(p)
        buf.add_pose(_pose(p.frame_number, p.timestamp))
    assert buf.poses[0].timestamp >= buf.packets[0].timestamp
    assert len(buf.poses) == len(buf.packets)


def test_latest_slot_overwrites_and_counts() -> None:
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0.1) == 4 and slot.overwritten == 4
    assert slot.take(0.01) is None  # timeout
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take()))
    t.start()
    slot.close()
    t.join(2)
    assert got == [None]


async def test_broadcast_policies() -> None:
    loop = asyncio.get_running_loop()
    b: Broadcast[int] = Broadcast(loop)
    latest = b.subscribe(maxsize=2, policy="latest")
    strict = b.subscribe(maxsize=3, policy="fail")
    for i in range(5):
        b.publish(i)
    assert [await latest.get(), await latest.get()] == [3, 4] and latest.dropped == 3
    assert strict.closed and strict.overflowed
    assert [await strict.get() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(EOFError):
        await strict.get()
    assert b.subscribers == 1


async def test_broadcast_from_threads_keeps_order() -> None:
    b: Broadcast[int] = Broadcast(asyncio.get_running_loop())
    sub = b.subscribe(maxsize=1000, policy="fail")
    t = threading.Thread(target=lambda: [b.publish_threadsafe(i) for i in range(500)])
    t.start()
    t.join()
    got = [await sub.get() for _ in range(500)]
    assert got == list(range(500))
    b.close()
    assert [x async for x in sub] == []
