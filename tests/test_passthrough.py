"""Passthrough: the RTSP camera's own H.264 recorded and streamed as it is, no encode.

Against a real RTSP server process on loopback (gst-rtsp-server, ``tests/rtsp_camera.py``)
and a real ``climbd run`` with ``video.encoder = "copy"``:

- a recording is byte-for-byte the camera's H.264: the NAL units of every sample of the
  recorded MP4 equal, in order, those a second RTSP client received from the camera;
- an aiortc WHEP viewer plays it (no encoder frames at all in the daemon);
- pre-roll and save-last work on it (they start at the camera's keyframes);
- a camera stream browsers cannot take (High profile with B-frames) falls back to the
  encode path, saying why; ``"auto"`` picks passthrough for an H.264 camera only.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc.codecs import CODECS

from climbd.config import Config
from climbd.pipeline import Pipeline
from climbd.storage import probe
from climbd.streaming.profiles import preferences
from climbd.video import EncodedPacket
from tests.conftest import SHORT, DaemonProcess, auth_headers
from tests.rtsp_support import (
    RtspCamera,
    StreamRecorder,
    mp4_nal_units,
    need_rtsp_server,
    wait_for,
)
from tests.whep_viewer import Viewer

pytestmark = [pytest.mark.system, pytest.mark.timing]  # a camera server process; wall-clock rates

FPS = 30
GOP = 30   # frames: a keyframe a second, as the docs tell camera owners to set


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspCamera]:
    need_rtsp_server()
    cam = RtspCamera(tmp_path_factory.mktemp("camera"), "viewer", "pw-9", fps=FPS, gop=GOP)
    cam.start()
    yield cam
    cam.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, camera: RtspCamera
           ) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("passthrough")
    cfg = root / "climbd.toml"
    cfg.write_text(f'[capture]\nsource = "{camera.url()}"\n[video]\nencoder = "copy"\n'
                   '[pose]\nworkers = 1\n[webrtc]\nhost_candidates = ["127.0.0.1"]\n')
    d = DaemonProcess(root / "state", camera.url(), "--config", str(cfg), loop=False)
    try:
        d.wait_ready(90)
        yield d
    finally:
        d.stop()


def _health(d: DaemonProcess) -> dict[str, Any]:
    status, body = d.get("/api/health", timeout=5)
    assert status == 200
    return dict(body)


def test_health_says_passthrough_and_nothing_is_encoded(daemon: DaemonProcess) -> None:
    h = _health(daemon)
    video = h["video"]
    assert video["mode"] == "copy", video
    assert video["passthrough"]["active"] and video["passthrough"]["problem"] is None
    assert video["passthrough"]["profile_level_id"] == "42c01e"  # what x264 baseline sends
    assert video["encoded"] == 0 and video["frames"] > 0, video
    # frames are decoded for pose all the same
    assert h["pose"]["results"] > 0 and h["pose"]["error"] is None, h["pose"]
    gop = video["passthrough"]["gop_s"]
    # the camera sends ~1 s of backlog in a burst on connect, so allow 20 % on the GOP span
    assert gop is not None and abs(gop - GOP / FPS) < 0.2, gop
    assert "viewer:" not in str(h) and "pw-9" not in str(h)


def test_recording_is_byte_for_byte_the_cameras_h264(daemon: DaemonProcess,
                                                     camera: RtspCamera) -> None:
    sent = StreamRecorder(camera.url())   # a second client of the same camera stream
    try:
        wait_for(lambda: len(sent.units) > FPS or sent.error, 20, "second client reading")
        assert sent.error is None, sent.error
        status, started = daemon.post("/api/recordings/start", {"pre_roll_s": 0})
        assert status == 201, started
        wait_for(lambda: _health(daemon)["recording"]["frames"] >= 3 * FPS, 15, "3 s recorded")
        status, done = daemon.post("/api/recordings/stop")
        assert status == 200 and done["status"] == "completed", done
        video = daemon.state_dir / "sessions" / str(done["id"]) / "video.mp4"
        recorded = mp4_nal_units(video)
        assert len(recorded) == done["frame_count"] >= 3 * FPS
        first = recorded[0]
        assert [u[0] & 0x1F for u in first if u[0] & 0x1F in (5, 7, 8)][:2] == [7, 8], \
            "the file starts with SPS, PPS and an IDR"
        cam = [units for _, units in list(sent.units)]
        starts = [i for i, units in enumerate(cam) if units == first]
        assert starts, "the recording's first access unit is not one the camera sent"
        i = starts[0]
        # the second client is a network hop behind the daemon: let it catch up
        wait_for(lambda: len(sent.units) >= i + len(recorded), 10, "second client")
    finally:
        sent.close()
    cam = [units for _, units in sent.units]
    assert recorded == cam[i:i + len(recorded)]   # every NAL unit, byte for byte, in order
    sizes = sum(len(u) for au in recorded for u in au)
    assert sizes > 50_000  # (a real stream, not a few empty units)


def test_whep_viewer_plays_the_cameras_stream(daemon: DaemonProcess) -> None:
    async def watch() -> tuple[int, int, int, str]:
        viewer = Viewer(host_candidates=["127.0.0.1"], landmarks=True)
        async with aiohttp.ClientSession(base_url=daemon.base,
                                         headers=auth_headers(daemon.base)) as http:
            offer = await viewer.offer()
            async with http.post("/api/whep", data=offer,
                                 headers={"Content-Type": "application/sdp"}) as r:
                answer = await r.text()
                assert r.status == 201, answer
                location = r.headers["Location"]
            await viewer.accept(answer)
            deadline = time.monotonic() + 20
            while viewer.frames < 2 * FPS and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            last = viewer.received[-1] if viewer.received else None
            async with http.delete(location):
                pass
            await viewer.close()
        assert last is not None
        return viewer.frames, last.width, last.height, answer

    frames, width, height, answer = asyncio.run(watch())
    assert frames >= 2 * FPS
    assert (width, height) == (640, 360)
    assert re.search(r"a=fmtp:\d+ .*profile-level-id=42[ec]01f", answer), answer
    assert _health(daemon)["video"]["encoded"] == 0, "no encode for a viewer either"


def test_pre_roll_and_save_last(daemon: DaemonProcess) -> None:
    wait_for(lambda: _health(daemon)["recording"]["pre_roll_available_s"] >= 4.5, 20,
             "pre-roll buffered")
    status, saved = daemon.post("/api/recordings/save-last", {"seconds": 3})
    assert status == 201, saved
    assert saved["status"] == "completed"
    # starts at the camera's keyframe at or before now-3 s: 3 s to 3 s + one GOP
    assert 3.0 - 0.1 <= saved["duration_s"] <= 3.0 + GOP / FPS + 0.2, saved
    assert saved["frame_count"] == pytest.approx(saved["duration_s"] * FPS, abs=1.5)
    video = daemon.state_dir / "sessions" / str(saved["id"]) / "video.mp4"
    assert probe(video).frames == saved["frame_count"]
    assert 5 in {u[0] & 0x1F for u in mp4_nal_units(video)[0]}, "starts at an IDR"

    status, started = daemon.post("/api/recordings/start", {"pre_roll_s": 2})
    assert status == 201, started
    assert 2.0 <= started["pre_roll_s"] <= 2.0 + GOP / FPS + 0.1, started
    wait_for(lambda: _health(daemon)["recording"]["elapsed_s"] >= 3.5, 10, "recording")
    status, done = daemon.post("/api/recordings/stop")
    assert status == 200 and done["duration_s"] >= 3.4, done
    assert probe(daemon.state_dir / "sessions" / str(done["id"]) / "video.mp4").frames \
        == done["frame_count"]


# -- choosing passthrough ------------------------------------------------------------------


async def _first_packets(config: Config, n: int = 45) -> tuple[Pipeline, list[EncodedPacket]]:
    loop = asyncio.get_running_loop()
    pipeline = Pipeline(config, loop)
    sub = pipeline.packets.subscribe(maxsize=1000, policy="fail")
    pipeline.start()
    got: list[EncodedPacket] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < n:
                got.append(await sub.get())
    finally:
        await asyncio.to_thread(pipeline.stop)
    return pipeline, got


def _config(source: str, encoder: str) -> Config:
    return Config.model_validate({"capture": {"source": source},
                                  "video": {"encoder": encoder}, "pose": {"enabled": False}})


async def test_a_stream_browsers_cannot_take_falls_back_to_encoding(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    need_rtsp_server()
    cam = RtspCamera(tmp_path, fps=FPS, gop=GOP, profile="high", bframes=2,
                     preset="superfast")
    cam.start()
    try:
        pipeline, packets = await _first_packets(_config(cam.url(), "copy"))
    finally:
        cam.stop()
    assert pipeline.video_mode == "encode"
    assert "B-frames" in (pipeline.passthrough_problem or ""), pipeline.passthrough_problem
    assert "passthrough not possible" in caplog.text and "B-frames" in caplog.text
    assert all(p.info.source == "encode" for p in packets)
    assert packets[0].keyframe and packets[0].info.profile_level_id.startswith("42")
    assert pipeline.health()["video"]["passthrough"]["problem"] == pipeline.passthrough_problem


async def test_auto_copies_an_h264_camera_and_encodes_a_file(tmp_path: Path,
                                                              camera: RtspCamera) -> None:
    pipeline, packets = await _first_packets(_config(camera.url(), "auto"), n=4 * FPS)
    assert pipeline.video_mode == "copy" and pipeline.encoder.frames == 0
    assert all(p.info.source == "camera" for p in packets)
    assert packets[0].keyframe
    # 90 kHz pts one frame (3000 ticks at 30 fps) apart, on the camera's clock; the first
    # 2 s after connecting hold the server's backlog, which arrives in a burst and is
    # stamped near its arrival, so they are left out
    steps = [b.pts - a.pts for a, b in itertools.pairwise(packets[2 * FPS:])]
    # (the anchor follows a faster arrival back by at most 2 ms = 180 ticks a frame)
    assert all(abs(s - 3000) <= 185 for s in steps), [s for s in steps if abs(s - 3000) > 185]
    assert sum(steps) / len(steps) == pytest.approx(3000, abs=100)
    assert all(b.pts > a.pts for a, b in itertools.pairwise(packets))

    pipeline, packets = await _first_packets(_config(str(SHORT), "auto"), n=10)
    assert pipeline.video_mode == "encode" and not pipeline.want_copy
    assert all(p.info.source == "encode" for p in packets)


def test_a_high_profile_camera_is_answered_with_its_profile(
        tmp_path: Path, daemon_factory: Any) -> None:
    """SDP: the answer names the camera's profile; a player without it gets a clear 422."""
    need_rtsp_server()
    cam = RtspCamera(tmp_path, fps=FPS, gop=GOP, profile="high", bframes=0,
                     preset="superfast")
    cam.start()
    try:
        cfg = tmp_path / "climbd.toml"
        cfg.write_text(f'[capture]\nsource = "{cam.url()}"\n[video]\nencoder = "copy"\n'
                       '[pose]\nenabled = false\n[webrtc]\nhost_candidates = ["127.0.0.1"]\n')
        d = daemon_factory(cam.url(), "--config", str(cfg), loop=False)
        d.wait_ready(60, capture=False)
        video = wait_for(lambda: (v := _health(d)["video"])["passthrough"]["profile_level_id"]
                         and v, 20, "camera stream")
        assert video["mode"] == "copy", video
        plid = video["passthrough"]["profile_level_id"]
        assert plid.startswith("64"), plid   # High (profile_idc 100)

        async def offer(viewer: Viewer) -> tuple[int, str, str | None]:
            sdp = await viewer.offer()
            async with aiohttp.ClientSession(base_url=d.base,
                                             headers=auth_headers(d.base)) as http, \
                    http.post("/api/whep", data=sdp,
                              headers={"Content-Type": "application/sdp"}) as r:
                return r.status, await r.text(), r.headers.get("Location")

        async def run() -> None:
            # aiortc's own table has Baseline/Constrained Baseline only: refused, saying why
            plain = Viewer(host_candidates=["127.0.0.1"], landmarks=False)
            status, body, _ = await offer(plain)
            await plain.close()
            assert status == 422 and "no-h264-profile" in body and "High" in body, body
            # a player that offers High (as browsers do) is answered with High and plays
            preferences(plid)   # (adds High to aiortc's table in this process)
            viewer = Viewer(host_candidates=["127.0.0.1"], landmarks=False)
            status, answer, location = await offer(viewer)
            assert status == 201, answer
            assert re.search(rf"a=fmtp:\d+ .*profile-level-id={plid}", answer), answer
            assert "profile-level-id=42" not in answer, answer
            await viewer.accept(answer)
            deadline = time.monotonic() + 20
            while viewer.frames < FPS and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            assert viewer.frames >= FPS
            assert (viewer.received[-1].width, viewer.received[-1].height) == (640, 360)
            async with aiohttp.ClientSession(base_url=d.base,
                                             headers=auth_headers(d.base)) as http, \
                    http.delete(location or ""):
                pass
            await viewer.close()

        table = list(CODECS["video"])
        try:
            asyncio.run(run())
        finally:
            CODECS["video"][:] = table  # (the table is process-global: leave it as it was)
        assert _health(d)["video"]["encoded"] == 0
    finally:
        cam.stop()
