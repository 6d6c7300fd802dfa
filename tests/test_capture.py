"""Capture: file pacing and timestamps, loops, bad files, and a camera that disappears."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import av
import pytest

from climbd.capture import (
    AvSource,
    CaptureState,
    CaptureWorker,
    SourceKind,
    classify_source,
)
from climbd.config import CaptureConfig
from climbd.errors import SourceError
from tests.conftest import SHORT
from tests.fakes import CameraRig

pytestmark = [pytest.mark.integration, pytest.mark.timing]  # wall-clock rates and delays


def test_classify_source() -> None:
    assert classify_source("/dev/video0") is SourceKind.DEVICE
    assert classify_source("2") is SourceKind.DEVICE
    assert classify_source("rtsp://cam.local/stream") is SourceKind.URL
    assert classify_source("clips/a.mp4") is SourceKind.FILE


def _pts_seconds(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [f.time for f in c.decode(video=0)]


def test_file_is_paced_like_a_camera_with_source_timestamps(media: Path) -> None:
    src = AvSource(str(SHORT), CaptureConfig())
    frames, arrivals = [], []
    t0 = time.monotonic()
    while (f := src.read()) is not None:
        frames.append(f)
        arrivals.append(time.monotonic())
    src.close()
    pts = _pts_seconds(SHORT)
    assert [f.number for f in frames] == list(range(len(pts)))
    rel = [f.timestamp - frames[0].timestamp for f in frames]
    assert rel == pytest.approx([p - pts[0] for p in pts], abs=1e-9)
    # delivered no earlier than its timestamp: the clip takes its own duration to play
    assert arrivals[-1] - t0 >= pts[-1] - pts[0] - 0.01
    assert all(a >= f.timestamp - 1e-3 for a, f in zip(arrivals, frames, strict=True))


def test_loop_continues_numbers_and_time(media: Path) -> None:
    src = AvSource(str(SHORT), CaptureConfig(loop=True), first_number=100)
    src._pace = False  # timing is what we check, not wall-clock pacing
    frames = [src.read() for _ in range(73 * 2 + 5)]
    src.close()
    assert all(f is not None for f in frames)
    nums = [f.number for f in frames if f]
    assert nums == list(range(100, 100 + len(frames)))
    ts = [f.timestamp for f in frames if f]
    steps = [b - a for a, b in itertools.pairwise(ts)]
    assert min(steps) > 0.02 and max(steps) < 0.05  # 30 fps, across the loop seam too


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        AvSource(str(tmp_path / "none.mp4"), CaptureConfig())
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    with pytest.raises(SourceError):
        AvSource(str(junk), CaptureConfig())


def test_truncated_file_ends_or_errors_cleanly(tmp_path: Path, media: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(SHORT.read_bytes()[: 120_000])
    try:
        src = AvSource(str(cut), CaptureConfig())
    except SourceError:
        return  # refused at open: a clear error
    src._pace = False
    n = 0
    try:
        while src.read() is not None:
            n += 1
    except SourceError as exc:
        assert "cut.mp4" in str(exc)
    assert n < 73


def test_camera_that_disappears_is_reported_and_reopened(media: Path) -> None:
    rig = CameraRig(SHORT, fps=60)
    got: list[int] = []
    cfg = CaptureConfig(retry_initial_s=0.05, retry_max_s=0.2)
    worker = CaptureWorker(rig.open, lambda f: got.append(f.number), cfg)
    worker.start()
    try:
        _wait(lambda: len(got) >= 10)
        assert worker.state is CaptureState.RUNNING
        rig.unplug()
        _wait(lambda: worker.state is CaptureState.LOST)
        assert "No such device" in (worker.error or "") or "No such file" in (worker.error or "")
        n_lost = len(got)
        time.sleep(0.4)  # retries keep failing while unplugged
        assert len(got) == n_lost and rig.opens >= 3
        rig.replug()
        _wait(lambda: worker.state is CaptureState.RUNNING and len(got) > n_lost + 5)
        assert worker.error is None
        assert got == sorted(set(got)), "frame numbers continue across the reconnect"
    finally:
        worker.stop()
    assert worker.state is CaptureState.STOPPED


def test_missing_camera_at_start_is_retried(media: Path) -> None:
    rig = CameraRig(SHORT, fps=60)
    rig.unplug()
    got: list[int] = []
    worker = CaptureWorker(rig.open, lambda f: got.append(f.number),
                           CaptureConfig(retry_initial_s=0.05, retry_max_s=0.1))
    worker.start()
    try:
        assert worker.opened.wait(2)
        _wait(lambda: worker.state is CaptureState.LOST)
        rig.replug()
        _wait(lambda: len(got) > 3)
    finally:
        worker.stop()


def _wait(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _annexb_clip(path: Path, frames: int = 60, gop: int = 15) -> list[bytes]:
    """An H.264 elementary stream (Annex-B, SPS/PPS before every IDR), as a UVC camera's
    V4L2 ``input_format=h264`` delivers it; returns the access units written."""
    import fractions

    import numpy as np

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {"profile": "baseline", "tune": "zerolatency",
                   "x264-params": "repeat-headers=1:scenecut=0"}
    units = []
    for i in range(frames):
        img = np.full((240, 320, 3), (i * 4) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    path.write_bytes(b"".join(units))
    return units


def test_copy_of_an_annexb_stream_keeps_every_access_unit(tmp_path: Path) -> None:
    """Stream copy of Annex-B H.264 (the V4L2 h264 / RTSP form): the same bytes come out,
    one access unit per frame, keyframes flagged, each frame decoded for pose."""
    from climbd.video import nal_units, passthrough_problem

    clip = tmp_path / "camera.h264"
    sent = _annexb_clip(clip)
    src = AvSource(str(clip), CaptureConfig(), copy=True, pace=False)
    assert src.copy
    got = []
    while (f := src.read()) is not None:
        got.append(f)
    src.close()
    assert [f.packet.data for f in got if f.packet] == sent
    assert [f.packet.keyframe for f in got if f.packet] == [i % 15 == 0 for i in range(60)]
    assert all(f.image is not None and f.image.width == 320 for f in got)
    info = got[0].packet.info if got[0].packet else None
    assert info is not None and info.profile_level_id.startswith("42")
    assert passthrough_problem(info) is None
    assert [u[0] & 0x1F for u in nal_units(got[0].packet.data)][:2] == [7, 8]  # type: ignore[union-attr]


def test_copy_of_an_mp4_with_b_frames_is_flagged(media: Path) -> None:
    """avcC (MP4) input is converted to Annex-B with SPS/PPS in band; B-frames are seen."""
    from climbd.video import nal_units, passthrough_problem

    src = AvSource(str(SHORT), CaptureConfig(), copy=True, pace=False)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert len(frames) == 73 and all(f.packet is not None for f in frames)
    first = frames[0].packet
    assert first is not None and first.keyframe
    assert {7, 8, 5} <= {u[0] & 0x1F for u in nal_units(first.data)}
    assert first.info.b_frames
    assert "B-frames" in (passthrough_problem(first.info) or "")
