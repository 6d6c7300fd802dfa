"""Delayed live view over WHEP, with real aiortc peers on 127.0.0.1 (ICE restricted to
loopback), a ``climbd run`` subprocess playing a real clip like a camera, real BlazePose, and
a paired wall tablet's credentials (pairing codes from ``climbd pair``).

Shows: the delayed viewer's picture is N s (± 1 frame) behind the live viewer's, comparing
the RTP timestamps both received for the same frames; its landmark messages name its own
delayed frames and carry the very same poses the live channel carried N s earlier; viewers
of one N share one delay line, which ends with its last viewer; bad delays are refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, STEEPWALL, DaemonProcess
from tests.securitykit import Agent
from tests.whep_viewer import Viewer

pytestmark = [pytest.mark.media, pytest.mark.timing]  # a climbd run subprocess with BlazePose

DELAY_S = 3.0
FPS = 25.0  # the clip's rate (a file source is paced like a camera)
FRAME_TICKS = 90000 / FPS
#: one frame, plus scheduling noise of the loaded test machine (see the first test)
TOLERANCE_S = 1 / FPS + 0.015
SDP = {"Content-Type": "application/sdp"}
U32 = 0xFFFFFFFF


CONFIG = f"""
[pose]
workers = 1
[recording]
pre_roll_s = 2.0
buffer_s = 6.0
[live]
delay_s = {DELAY_S}
[webrtc]
host_candidates = ["127.0.0.1"]
[retention]
floor_mb = 0
headroom_s = 0
[security]
# this module opens many WHEP sessions back to back on purpose (lines, refusals)
signalling_burst = 100
signalling_per_min = 6000
"""


class Wall:
    """A ``climbd run`` subprocess (its own GIL and event loop, like the appliance), a paired
    wall tablet and the admin, each an HTTP agent with its own cookies."""

    def __init__(self, daemon: DaemonProcess, tablet: Agent, admin: Agent):
        self.daemon, self.tablet, self.admin = daemon, tablet, admin

    async def health(self) -> dict[str, Any]:
        status, body = await self.admin.req("GET", "/api/health")
        assert status == 200, body
        return dict(body)

    async def lines(self) -> list[dict[str, Any]]:
        return list((await self.health())["live"]["delay"]["lines"])


def _code(state: Path, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "climbd", "pair", "--state-dir", str(state),
                          *extra], capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    if not STEEPWALL.exists():
        pytest.skip("test media missing")
    root = tmp_path_factory.mktemp("delayed")
    (root / "climbd.toml").write_text(CONFIG)
    d = DaemonProcess(root / "state", STEEPWALL, "--config", str(root / "climbd.toml"))
    try:
        d.wait_ready(90)
        yield d
    finally:
        d.stop()


@pytest.fixture
async def wall(daemon: DaemonProcess) -> AsyncIterator[Wall]:
    async with Agent(daemon.base) as tablet, Agent(daemon.base) as admin:
        await tablet.pair(_code(daemon.state_dir))
        await admin.setup_admin(_code(daemon.state_dir, "--admin"))
        yield Wall(daemon, tablet, admin)


async def _join(tablet: Agent, path: str, landmarks: bool = True) -> tuple[Viewer, str]:
    viewer = Viewer(host_candidates=["127.0.0.1"], decode=False, landmarks=landmarks)
    resp = await tablet.raw("POST", path, data=await viewer.offer(), headers=SDP)
    async with resp:
        body = await resp.text()
        assert resp.status == 201, body
        assert resp.headers["ETag"] and resp.headers["Location"].startswith("/api/whep/")
        location = resp.headers["Location"]
    await viewer.accept(body)
    return viewer, location


async def _poll(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def _pts_arrivals(viewer: Viewer) -> dict[int, float]:
    """pts (90 kHz, the encoder's clock) -> arrival time of each frame the viewer got."""
    assert viewer.hello is not None and viewer.hello["rtp_origin"] is not None
    origin = int(viewer.hello["rtp_origin"])
    return {(f.rtp - origin) & U32: f.arrived for f in viewer.received}


async def _buffered(wall: Wall, seconds: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await wall.health())["recording"]["pre_roll_available_s"] < seconds:
        assert time.monotonic() < deadline, "the buffer does not fill"
        await asyncio.sleep(0.2)


async def test_delayed_view_is_n_seconds_behind_with_matching_landmarks(wall: Wall) -> None:
    tablet = wall.tablet
    await _buffered(wall, DELAY_S + 1)
    live, live_at = await _join(tablet, "/api/whep")
    delayed, delayed_at = await _join(tablet, f"/api/whep/delayed?delay_s={DELAY_S:g}")
    def overlap() -> int:  # frames both viewers got (the delayed one replays the past)
        if not all(v.hello and v.hello.get("rtp_origin") is not None for v in (live, delayed)):
            return 0
        return len(set(_pts_arrivals(live)) & set(_pts_arrivals(delayed)))

    assert await _poll(lambda: overlap() >= 75 and delayed.message_count >= 40, 40), (
        delayed.frames, delayed.message_count, delayed.hello)
    assert delayed.hello is not None and delayed.hello["delay_s"] == DELAY_S
    assert live.hello is not None and live.hello["delay_s"] == 0

    # 1. the same frames (same pts) arrive N s later on the delayed view
    live_pts, delayed_pts = _pts_arrivals(live), _pts_arrivals(delayed)
    common = sorted(set(live_pts) & set(delayed_pts))
    assert len(common) >= 60, (len(live_pts), len(delayed_pts), len(common))
    lags = np.array([delayed_pts[p] - live_pts[p] for p in common])
    # The comparison needs a live stream that is itself on time: when the shared machine is
    # so overloaded that the encoder drops frames, live latency swings by a second and no
    # "N s behind live" can be measured (the delayed view keeps the camera's spacing).
    assert live.hello is not None
    live_latency = np.array([live_pts[p] - (float(live.hello["epoch"]) + p / 90000)
                             for p in common])
    spread = float(np.percentile(live_latency, 90) - np.percentile(live_latency, 10))
    overloaded = spread > 0.25
    if not overloaded:
        # The target is one frame (40 ms). Both viewers run in this process on the shared
        # 2-core machine (load 10-15 while 8 developers test), which adds up to ~10 ms of
        # scheduling noise to either side; observed medians were 0-45 ms off.
        assert abs(float(np.median(lags)) - DELAY_S) <= TOLERANCE_S, (
            lags, await wall.lines(), os.getloadavg())
        # ... and whenever a delayed frame arrives, the newest live frame is N s (of
        # capture time) ahead of it
        live_sorted = sorted(live_pts.items(), key=lambda kv: kv[1])
        live_times = np.array([t for _, t in live_sorted])
        behind = []
        for pts, t in delayed_pts.items():
            i = int(np.searchsorted(live_times, t, side="right")) - 1
            if i >= 0:
                behind.append(((live_sorted[i][0] - pts) & U32) / 90000)
        assert len(behind) >= 60
        assert abs(float(np.median(behind)) - DELAY_S) <= TOLERANCE_S, behind
    # RTP timestamps of the delayed stream are continuous: one frame per step
    rtps = [f.rtp for f in delayed.received]
    steps = np.diff(np.array(rtps, dtype=np.int64)) & U32
    assert np.median(steps) == pytest.approx(FRAME_TICKS, abs=2), steps

    # 2. landmarks on the delayed channel name delayed frames (its RTP timestamps) ...
    msgs = [m.message for m in delayed.messages if m.message.rtp]
    received = set(rtps)
    first, last = rtps[0], rtps[-1]
    matchable = [m for m in msgs if 0 <= (m.timestamp - first) & U32 <= (last - first) & U32]
    matched = [m for m in matchable if m.timestamp in received]
    assert len(matchable) >= 30 and len(matched) >= 0.9 * len(matchable), (
        len(matched), len(matchable))
    origin = int(delayed.hello["rtp_origin"])
    assert all(m.timestamp == (origin + m.pts) & U32 for m in msgs)
    # ... and carry exactly the poses the live channel sent for the same frames N s earlier
    live_by_frame = {m.message.frame_number: m for m in live.messages}
    same = 0
    frame_arrival = _pts_arrivals(delayed)
    with_frame = []
    for m in delayed.messages:
        twin = live_by_frame.get(m.message.frame_number)
        if twin is None:
            continue
        assert twin.message.pts == m.message.pts
        a, b = twin.message.landmarks, m.message.landmarks
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            np.testing.assert_array_equal(a, b)
            same += 1
        if m.message.pts in frame_arrival:
            with_frame.append(m.arrived - frame_arrival[m.message.pts])
    assert same >= 20, same
    # the delayed skeleton travels with its delayed frame (live: it follows inference)
    assert abs(float(np.median(with_frame))) < 2 / FPS, with_frame

    # 3. no second encode: one encoder, delayed frames packetized by the line, not encoded
    stats = (await wall.health())["live"]
    lines = stats["delay"]["lines"]
    assert [line["delay_s"] for line in lines] == [DELAY_S] and lines[0]["viewers"] == 1
    assert stats["delay"] == {"default_s": DELAY_S, "max_s": 6.0, "lines": lines}
    assert lines[0]["packetizer"]["packetized"] >= 90

    for location, viewer in ((live_at, live), (delayed_at, delayed)):
        status, _ = await tablet.req("DELETE", location)
        assert status == 200
        await viewer.close()
    assert await _apoll(wall.lines, lambda lines: not lines, 10)
    if overloaded:  # everything else was checked; the timing could not be
        pytest.skip(f"machine overloaded: live latency itself varied by {spread:.2f} s "
                    f"(p10-p90), load {os.getloadavg()[0]:.1f}: N s behind live not measured")


async def _apoll(get: Any, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate(await get()):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_one_line_per_delay_and_bad_delays_are_refused(wall: Wall) -> None:
    tablet = wall.tablet
    await _buffered(wall, 2.5)
    a, a_at = await _join(tablet, "/api/whep/delayed?delay_s=2")
    b, b_at = await _join(tablet, "/api/whep/delayed?delay_s=2")
    # live.delay_s, and a plain WHEP player: video only, no data channel in its offer
    c, c_at = await _join(tablet, "/api/whep/delayed", landmarks=False)
    assert await _poll(lambda: a.frames > 10 and b.frames > 10 and c.frames > 10, 30)
    lines = {line["delay_s"]: line for line in await wall.lines()}
    assert set(lines) == {2.0, DELAY_S} and lines[2.0]["viewers"] == 2
    # two viewers of one line: one packetization per frame, reused by the other viewer
    before, frames = lines[2.0]["packetizer"], (a.frames, b.frames)
    assert await _poll(lambda: a.frames >= frames[0] + 25 and b.frames >= frames[1] + 25, 20)
    after = {x["delay_s"]: x for x in await wall.lines()}[2.0]["packetizer"]
    packetized = after["packetized"] - before["packetized"]
    reused = after["reused"] - before["reused"]
    assert packetized >= 15 and reused >= 0.8 * packetized, (before, after)
    status, _ = await tablet.req("DELETE", a_at)
    assert status == 200
    await a.close()
    assert await _apoll(wall.lines, lambda lines: [x["viewers"] for x in lines] == [1, 1], 20)
    assert b.connection_state == "connected"
    for location, viewer in ((b_at, b), (c_at, c)):
        await tablet.req("DELETE", location)
        await viewer.close()
    assert await _apoll(wall.lines, lambda lines: not lines, 10)

    offer = await Viewer(host_candidates=["127.0.0.1"]).offer()
    for query, status, code in (("delay_s=0.5", 422, "delay-out-of-range"),
                                ("delay_s=7", 422, "delay-out-of-range"),
                                ("delay_s=nan", 400, "bad-delay"),
                                ("delay_s=ten", 400, "bad-delay")):
        resp = await tablet.raw("POST", f"/api/whep/delayed?{query}", data=offer, headers=SDP)
        async with resp:
            body = await resp.json()
            assert resp.status == status and body["error"] == code, (query, body)
            assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert (await wall.health())["live"]["viewers"] == 0
    # a client without credentials (also from 127.0.0.1) gets no delayed view
    async with Agent(tablet.base) as stranger:
        resp = await stranger.raw("POST", "/api/whep/delayed", data=offer, headers=SDP)
        async with resp:
            assert resp.status in (401, 403), await resp.text()
    assert (await wall.health())["live"]["viewers"] == 0


async def test_operator_report_names_where_each_setting_came_from(wall: Wall) -> None:
    """``climbd run --config FILE --source CLIP --port N``: file keys say "file", command-line
    options "cli", the rest "default" (``GET /api/system``, admin only)."""
    status, _ = await wall.tablet.req("GET", "/api/system")
    assert status == 403
    status, report = await wall.admin.req("GET", "/api/system")
    assert status == 200, report
    sources = {e["key"]: e["source"] for e in report["config"]}
    assert sources["pose.workers"] == sources["recording.buffer_s"] == "file"
    assert sources["live.delay_s"] == sources["webrtc.host_candidates"] == "file"
    assert sources["capture.source"] == sources["server.port"] == "cli"
    assert sources["capture.loop"] == sources["server.host"] == "cli"
    assert sources["video.bitrate_kbps"] == sources["share.base_url"] == "default"
    assert report["camera"]["state"] == "running" and report["camera"]["fps"] > 0
    assert report["pose"]["workers"] == 1 and report["pose"]["fps"] > 0
    assert report["devices"] and all(d["name"] == "tablet" for d in report["devices"])
