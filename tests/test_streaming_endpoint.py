"""The WHEP endpoint in-process with real aiortc viewers on 127.0.0.1, fed by the real H.264
encoder on synthetic frames (the camera is the only thing replaced). In-process, so the test
can see what a subprocess hides: asyncio tasks, subscriptions, keyframe requests, RTCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
import pytest

from climbd.broadcast import Broadcast
from climbd.config import VideoConfig, WebRTCConfig
from climbd.pose import NUM_LANDMARKS, Pose
from climbd.streaming import OfferError, UnknownViewer, ViewerLimitReached, WhepEndpoint
from climbd.video import EncodedPacket, VideoEncoder
from tests.whep_viewer import Viewer

pytestmark = [pytest.mark.integration, pytest.mark.timing]  # wall-clock rates and delays

FPS = 25.0


class SyntheticCamera:
    """Frames with a moving square, encoded by the real :class:`VideoEncoder`, and a "pose"
    per frame (a fixed skeleton, shifted): the daemon's broadcasts without a camera."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.packets: Broadcast[EncodedPacket] = Broadcast(loop)
        self.poses: Broadcast[Pose] = Broadcast(loop)
        self.encoder = VideoEncoder(VideoConfig(preset="ultrafast", bitrate_kbps=800), FPS)
        self.keyframe_requests = 0
        self.keyframes = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def packet_subscribers(self) -> int:
        return self.packets.subscribers

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.encoder.request_keyframe()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        n = 0
        t0 = time.monotonic()
        while True:
            img = np.full((240, 320, 3), 40, np.uint8)
            x = (n * 4) % 280
            img[100:140, x:x + 40] = (255, 200, 0)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            ts = time.monotonic()
            for p in self.encoder.encode(frame, ts, n):
                self.keyframes += p.keyframe
                self.packets.publish(p)
            image = np.zeros((NUM_LANDMARKS, 5), np.float32)
            image[:, 0] = (x + 20) / 320
            image[:, 1] = 0.5
            image[:, 3] = 1.0
            self.poses.publish(Pose(n, ts, 320, 240, image, None))
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / FPS - time.monotonic()))


@pytest.fixture
async def live() -> AsyncIterator[tuple[WhepEndpoint, SyntheticCamera]]:
    cam = SyntheticCamera()
    cam.start()
    endpoint = WhepEndpoint(cam, WebRTCConfig(host_candidates=["127.0.0.1"], max_viewers=3,
                                              ice_timeout_s=2.0))
    endpoint.start()
    yield endpoint, cam
    await endpoint.close()
    await cam.stop()


def _receiving(viewer: Viewer, frames: int, messages: int = 0) -> Callable[[], bool]:
    """A predicate: the viewer got at least this many frames and landmark messages."""
    return lambda: viewer.frames >= frames and viewer.message_count >= messages


async def _join(endpoint: WhepEndpoint, **kw: Any) -> tuple[Viewer, str]:
    viewer = Viewer(**kw)
    session, answer = await endpoint.create(await viewer.offer())
    await viewer.accept(answer)
    return viewer, session.id


async def test_viewers_leave_no_tasks_subscriptions_or_sessions_behind(
        live: tuple[WhepEndpoint, SyntheticCamera]) -> None:
    endpoint, cam = live
    await asyncio.sleep(0.3)
    tasks_before = {t.get_name() for t in asyncio.all_tasks()}
    subs_before = cam.packet_subscribers
    joined = [await _join(endpoint) for _ in range(3)]
    for v, _ in joined:
        assert await v.wait_for(_receiving(v, 20, 10), 10)
        assert v.matched() >= 5
    assert endpoint.viewers == 3
    assert cam.packet_subscribers == subs_before + 3
    assert all(s["video"]["shared_packetizing"] for s in endpoint.stats()["sessions"])
    assert endpoint.packetizer.reused > 0  # three viewers, one packetization per frame
    extra = Viewer()
    with pytest.raises(ViewerLimitReached):
        await endpoint.create(await extra.offer())
    await extra.close()
    # one leaves by DELETE, one vanishes (its peer closes), one by shutdown of its peer
    v0, id0 = joined[0]
    await endpoint.delete(id0)
    await v0.close()
    with pytest.raises(UnknownViewer):
        await endpoint.delete(id0)
    for v, _ in joined[1:]:
        await v.close()
    assert await joined[0][0].wait_for(lambda: endpoint.viewers == 0, 10)
    assert cam.packet_subscribers == subs_before
    assert endpoint.feed is not None and endpoint.feed.frames.subscribers == 0
    await asyncio.sleep(0.5)
    leftover = {t.get_name() for t in asyncio.all_tasks()} - tasks_before
    assert not {n for n in leftover if n.startswith("live-")}, leftover
    assert len(asyncio.all_tasks()) <= len(tasks_before) + 1, leftover


async def test_a_new_viewer_starts_at_a_keyframe_and_joins_do_not_flood_the_encoder(
        live: tuple[WhepEndpoint, SyntheticCamera], caplog: pytest.LogCaptureFixture) -> None:
    endpoint, _ = live
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    forced0 = endpoint.keyframes.forced
    for _ in range(4):  # a storm of joins and leaves
        v, sid = await _join(endpoint)
        assert await v.wait_for(_receiving(v, 3), 5), "no picture for a new viewer"
        await endpoint.delete(sid)
        await v.close()
    elapsed = time.monotonic() - t0
    forced = endpoint.keyframes.forced - forced0
    assert forced <= elapsed / 1.0 + 1, (forced, elapsed)  # at most one forced IDR a second
    assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]


async def test_picture_loss_storm_gives_few_keyframes(
        live: tuple[WhepEndpoint, SyntheticCamera]) -> None:
    endpoint, _ = live
    viewer, _ = await _join(endpoint, landmarks=False)  # a plain WHEP player: video only
    assert await viewer.wait_for(lambda: viewer.frames >= 10, 10)
    receiver = viewer.pc.getTransceivers()[0].receiver
    ssrc = next(iter(receiver._RTCRtpReceiver__remote_streams))  # type: ignore[attr-defined]
    forced0, pli0 = endpoint.keyframes.forced, endpoint.keyframes.reasons.get("pli", 0)
    t0 = time.monotonic()
    for _ in range(40):  # 20 PLI/s for 2 s (RFC 4585 §6.3.1)
        await receiver._send_rtcp_pli(ssrc)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    elapsed = time.monotonic() - t0
    assert endpoint.keyframes.reasons.get("pli", 0) - pli0 >= 30  # they all arrived
    assert endpoint.keyframes.forced - forced0 <= elapsed + 1
    assert viewer.channel is None and endpoint.stats()["sessions"][0]["landmarks"] is None
    frames = viewer.frames
    assert await viewer.wait_for(lambda: viewer.frames >= frames + 10, 5)
    await viewer.close()


async def test_offers_are_checked_before_any_peer_is_made(
        live: tuple[WhepEndpoint, SyntheticCamera]) -> None:
    endpoint, _ = live
    for bad in ("", "garbage", "v=0\r\n"):
        with pytest.raises(OfferError):
            await endpoint.create(bad)
    assert endpoint.viewers == 0 and endpoint.created == 0


async def test_shutdown_closes_every_viewer(live: tuple[WhepEndpoint, SyntheticCamera]) -> None:
    endpoint, _ = live
    joined = [await _join(endpoint) for _ in range(2)]
    for v, _ in joined:
        assert await v.wait_for(_receiving(v, 5), 10)
    await endpoint.close()
    assert endpoint.viewers == 0 and endpoint.close_reasons.get("shutdown") == 2
    late = Viewer()
    with pytest.raises(ViewerLimitReached):  # no new viewers while shutting down
        await endpoint.create(await late.offer())
    await late.close()
    for v, _ in joined:
        await v.close()
