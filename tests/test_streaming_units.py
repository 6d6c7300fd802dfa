"""Live-view building blocks without a daemon: message format, keyframe governor, offer
checks, data-channel input handling, host-candidate restriction (real aiortc, loopback)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from climbd.broadcast import Broadcast
from climbd.pose import NUM_LANDMARKS, POSE_CONNECTIONS, Pose
from climbd.streaming.datachannel import ERROR_REPLIES_PER_S, LandmarkChannel
from climbd.streaming.errors import OfferError
from climbd.streaming.feed import LandmarkFeed
from climbd.streaming.ice import ice_configuration, restrict_host_candidates
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.streaming.landmarks import (
    COORD_SCALE,
    HEADER,
    LandmarkFrame,
    decode_message,
    hello_message,
    pack_message,
)
from climbd.streaming.offer import parse_offer
from climbd.video import EncodedPacket, VideoStreamInfo

pytestmark = [pytest.mark.unit, pytest.mark.timing]  # wall-clock rates and delays

# -- message format ------------------------------------------------------------------------


def _pose(frame: int = 7, detected: bool = True) -> Pose:
    rng = np.random.default_rng(frame)
    image = None
    if detected:
        image = rng.uniform(0, 1, (NUM_LANDMARKS, 5)).astype(np.float32)
        image[:, 4] = np.nan  # the legacy graph never fills presence
    return Pose(frame, 100.0 + frame / 25, 540, 720, image, None, 0.02)


def test_pose_message_is_280_bytes_and_round_trips_within_quantisation() -> None:
    pose = _pose()
    frame = LandmarkFrame.from_pose(pose, pts=123_456)
    data = pack_message(frame, rtp_origin=None)
    assert len(data) == HEADER.size + 33 * 8 == 280
    msg = decode_message(data)
    assert msg.pts == 123_456 and msg.frame_number == 7 and not msg.rtp
    assert msg.timestamp == 123_456  # no RTP origin: the timestamp field carries pts
    assert msg.landmarks is not None and pose.image is not None
    assert np.abs(msg.landmarks[:, :3] - pose.image[:, :3]).max() <= 0.5 / COORD_SCALE + 1e-7
    assert np.abs(msg.landmarks[:, 3] - pose.image[:, 3]).max() <= 0.5 / 254 + 1e-7
    assert np.isnan(msg.landmarks[:, 4]).all()


def test_empty_pose_is_16_bytes() -> None:
    data = pack_message(LandmarkFrame.from_pose(_pose(detected=False), 9), None)
    assert len(data) == 16
    assert decode_message(data).landmarks is None


def test_rtp_timestamp_is_origin_plus_pts_modulo_2_32() -> None:
    frame = LandmarkFrame.from_pose(_pose(), pts=(1 << 32) + 26)  # after 13 h of pts
    msg = decode_message(pack_message(frame, rtp_origin=0xFFFF_FFF0))
    assert msg.rtp
    assert msg.timestamp == 10  # wrapped: 0xFFFFFFF0 + 26 - 2**32
    assert msg.pts == 26


def test_coordinates_outside_the_int16_range_are_clamped_not_wrapped() -> None:
    pose = _pose()
    assert pose.image is not None
    pose.image[0, :3] = (5.0, -5.0, np.nan)
    msg = decode_message(pack_message(LandmarkFrame.from_pose(pose, 0), None))
    assert msg.landmarks is not None
    assert msg.landmarks[0, 0] == pytest.approx(32767 / COORD_SCALE)
    assert msg.landmarks[0, 1] == pytest.approx(-32768 / COORD_SCALE)
    assert msg.landmarks[0, 2] == 0.0


@pytest.mark.parametrize("data", [b"", b"\x01" * 15, b"\x02" + b"\x00" * 15,
                                  HEADER.pack(1, 1, 33, 0, 0, 0) + b"\x00" * 8])
def test_decoder_rejects_malformed_messages(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_message(data)


def test_hello_carries_what_the_page_needs() -> None:
    hello = json.loads(hello_message(rtp_origin=5, epoch=12.5, width=540, height=720, fps=25.0))
    assert hello["type"] == "hello" and hello["rtp_origin"] == 5 and hello["clock_rate"] == 90000
    assert hello["scale"] == COORD_SCALE and hello["landmarks"] == 33
    assert [tuple(c) for c in hello["connections"]] == list(POSE_CONNECTIONS)
    assert json.loads(hello_message(rtp_origin=None, epoch=math.nan, width=None, height=None,
                                    fps=None))["epoch"] is None


# -- keyframe governor ---------------------------------------------------------------------


async def test_keyframe_requests_are_coalesced_and_rate_limited() -> None:
    forced: list[float] = []
    gov = KeyframeGovernor(lambda: forced.append(asyncio.get_running_loop().time()),
                           gop_s=0, min_interval_s=0.3)
    for _ in range(5):  # five viewers join at once: one IDR
        gov.request("join")
    assert len(forced) == 1 and gov.pending  # forced, on its way
    gov.saw_keyframe()
    assert not gov.pending
    gov.request("pli")  # 0.3 s have not passed: deferred, not dropped
    gov.request("pli")
    assert len(forced) == 1 and gov.pending
    await asyncio.sleep(0.45)
    assert len(forced) == 2
    assert forced[1] - forced[0] >= 0.29
    assert gov.stats() == {"requests": 7, "forced": 2, "reasons": {"join": 5, "pli": 2}}


async def test_a_natural_keyframe_satisfies_a_pending_request() -> None:
    forced: list[int] = []
    gov = KeyframeGovernor(lambda: forced.append(1), gop_s=0, min_interval_s=0.3)
    gov.request()
    gov.request()  # joins the IDR forced a moment ago
    assert forced == [1]
    gov.saw_keyframe()
    assert not gov.pending
    gov.request()  # within 0.3 s of the last forced IDR: deferred
    assert gov.pending and forced == [1]
    gov.saw_keyframe()  # the GOP's own IDR comes first
    assert not gov.pending
    await asyncio.sleep(0.4)
    assert forced == [1]


async def test_no_idr_is_forced_when_the_gop_brings_one_soon() -> None:
    forced: list[int] = []
    gov = KeyframeGovernor(lambda: forced.append(1), gop_s=1.0, min_interval_s=1.0,
                           natural_slack_s=0.2)
    gov.saw_keyframe()
    await asyncio.sleep(0.85)  # the next natural keyframe is due in 0.15 s
    gov.request("join")
    assert forced == [] and gov.pending
    gov.saw_keyframe()
    await asyncio.sleep(0.45)
    assert forced == []
    gov.close()


# -- offers --------------------------------------------------------------------------------


async def _offer(video: str | None = "recvonly", data: bool = True, audio: bool = False) -> str:
    pc = RTCPeerConnection(ice_configuration([]))
    try:
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        if video:
            pc.addTransceiver("video", direction=video)
        if data:
            pc.createDataChannel("landmarks", ordered=False, maxRetransmits=0)
        restrict_host_candidates(pc, ["127.0.0.1"])
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_a_browser_like_offer_is_accepted() -> None:
    offer = parse_offer(await _offer(audio=True))
    assert offer.data_channels and offer.video_mid == "1" and offer.candidates >= 1
    assert offer.ice_ufrag and offer.ice_pwd


@pytest.mark.parametrize("text", ["", "hello", "v=0\r\nm=video x", "\x00\x01garbage",
                                  "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                                  "v=0\r\n" + "a=x\r\n" * 20000])
def test_garbage_is_malformed_sdp(text: str) -> None:
    with pytest.raises(OfferError) as err:
        parse_offer(text)
    assert err.value.malformed


async def test_offers_we_cannot_serve_are_named() -> None:
    with pytest.raises(OfferError) as err:
        parse_offer(await _offer(video=None))
    assert err.value.code == "no-video"
    with pytest.raises(OfferError) as err:
        parse_offer(await _offer(video="sendonly"))
    assert err.value.code == "bad-direction"
    vp8_only = "\r\n".join(
        ln for ln in (await _offer()).split("\r\n")
        if not any(k in ln for k in ("H264", "fmtp:99", "fmtp:100", "fmtp:101", "fmtp:102"))
    ).replace("97 98 99 100 101 102", "97 98")
    with pytest.raises(OfferError) as err:
        parse_offer(vp8_only)
    assert err.value.code == "no-h264"


async def test_host_candidates_are_restricted_to_the_given_address() -> None:
    sdp = await _offer()
    candidates = [ln for ln in sdp.split("\r\n") if ln.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)


# -- data channel input --------------------------------------------------------------------


class _Channel:
    """A stand-in for RTCDataChannel's surface that LandmarkChannel uses (no network)."""

    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, fn: Any) -> None:
        self.handlers[event] = fn

    def send(self, data: Any) -> None:
        self.sent.append(data)


async def test_malformed_client_messages_get_rate_limited_errors() -> None:
    loop = asyncio.get_running_loop()
    feed = LandmarkFeed(Broadcast(loop), Broadcast(loop), KeyframeGovernor(lambda: None), loop)
    chan = _Channel()
    lc = LandmarkChannel(chan, feed, lambda: None)  # type: ignore[arg-type]
    assert lc.handle_client_message('{"type":"ping","id":3}')["type"] == "pong"  # type: ignore[index]
    bad: list[str | bytes] = [b"\x00\x01", "not json", "[1,2]", '{"type": 5}', '{"type":"launch"}',
           "x" * 5000, '{"type":"ping","id":{"a":1}}']
    replies = [lc.handle_client_message(m) for m in bad]
    codes = [r["code"] for r in replies if r]
    assert codes[:5] == ["bad-message", "bad-json", "bad-message", "bad-message", "unknown-type"]
    assert lc.malformed == len(bad)
    assert sum(r is not None for r in replies) <= ERROR_REPLIES_PER_S + 1  # token bucket
    lc.close()
    await feed.close()


async def test_client_messages_beyond_the_rate_limit_are_refused() -> None:
    loop = asyncio.get_running_loop()
    feed = LandmarkFeed(Broadcast(loop), Broadcast(loop), KeyframeGovernor(lambda: None), loop)
    lc = LandmarkChannel(_Channel(), feed, lambda: None,  # type: ignore[arg-type]
                         message_limit=(1.0, 5))
    replies = [lc.handle_client_message('{"type":"ping","id":1}') for _ in range(8)]
    assert [r["type"] for r in replies[:5] if r] == ["pong"] * 5  # the burst
    assert lc.rate_limited == 3
    assert all(r is None or r["code"] == "rate-limited" for r in replies[5:])
    lc.close()
    await feed.close()


async def test_feed_matches_poses_to_packets_in_either_order() -> None:
    loop = asyncio.get_running_loop()
    packets: Broadcast[EncodedPacket] = Broadcast(loop)
    poses: Broadcast[Pose] = Broadcast(loop)
    gov = KeyframeGovernor(lambda: None)
    feed = LandmarkFeed(packets, poses, gov, loop)
    feed.start()
    out = feed.frames.subscribe(maxsize=10)
    await asyncio.sleep(0)
    info = VideoStreamInfo("h264", 540, 720, 25.0, b"")
    packets.publish(EncodedPacket(b"\x00", 3600, 100.04, 1, True, info))
    poses.publish(_pose(1))        # after its packet
    poses.publish(_pose(2))        # before its packet: waits
    await asyncio.sleep(0.01)
    packets.publish(EncodedPacket(b"\x00", 7200, 100.08, 2, False, info))
    await asyncio.sleep(0.01)
    got = [out.get_nowait(), out.get_nowait()]
    assert [(f.frame_number, f.pts) for f in got if f] == [(1, 3600), (2, 7200)]
    assert feed.epoch == pytest.approx(100.0)
    assert feed.capture_time(7200) == pytest.approx(100.08)
    await feed.close()
