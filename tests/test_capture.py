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
