"""Replay routes against a real ``climbd run`` on sessions ingested from the shared clips:
thumbnails, frame time tables, binary pose windows, and clear 4xx answers for bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from climbd.storage.posecodec import BYTES_PER_FRAME_V1 as BYTES_PER_FRAME
from climbd.storage.posecodec import HEADER_SIZE, decode_chunk
from tests.conftest import http
from tests.replay_support import NAMES, Env, start_daemon

pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Env]:
    e = start_daemon(tmp_path_factory.mktemp("replay-api"))
    yield e
    e.daemon.stop()


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF0 marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7],
                                                                              "big")
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_thumbnail_is_a_middle_frame_made_once(env: Env) -> None:
    sid = NAMES["steepwall"]
    status, jpeg = http("GET", f"{env.base}/api/sessions/{sid}/thumbnail")
    assert status == 200 and isinstance(jpeg, bytes)
    assert _jpeg_size(jpeg) == (320, 426)  # 540x720 scaled to 320 wide, even height
    cached = env.state / "sessions" / str(sid) / "thumbnail.jpg"
    assert cached.read_bytes() == jpeg
    made = cached.stat().st_mtime_ns
    status, again = http("GET", f"{env.base}/api/sessions/{sid}/thumbnail")
    assert status == 200 and again == jpeg and cached.stat().st_mtime_ns == made
    # it shows the middle of the clip: closest to the middle frame, far from the first
    with av.open(str(env.state / "sessions" / str(sid) / "video.mp4")) as c:
        frames = [f.reformat(width=320, height=426).to_ndarray(format="rgb24")
                  for f in c.decode(c.streams.video[0])]
    import cv2

    thumb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB).astype(np.float32)
    diffs = [float(np.abs(thumb - f.astype(np.float32)).mean()) for f in frames]
    best = int(np.argmin(diffs))
    assert abs(best - len(frames) // 2) <= 2, (best, len(frames))
    assert diffs[best] < 0.5 * diffs[0]


def test_frame_table_matches_the_video(env: Env) -> None:
    for name in ("short", "steepwall"):
        sid = NAMES[name]
        status, body = http("GET", f"{env.base}/api/sessions/{sid}/frames")
        assert status == 200
        with av.open(str(env.state / "sessions" / str(sid) / "video.mp4")) as c:
            decoded = [float(f.time) for f in c.decode(c.streams.video[0])]
        assert body["count"] == len(decoded) and np.allclose(body["times"], decoded, atol=1e-6)
        status, raw = http("GET", f"{env.base}/api/sessions/{sid}/frames?format=bin")
        assert status == 200 and len(raw) == 8 * len(decoded)
        assert np.array_equal(np.frombuffer(raw, "<f8").round(6), np.round(body["times"], 6))


def test_binary_pose_windows_are_the_stored_rows(env: Env) -> None:
    sid = NAMES["steepwall"]
    status, whole = http("GET", f"{env.base}/api/sessions/{sid}/poses")
    assert status == 200
    parts = []
    for start in (0, 10, 20):
        status, blob = http("GET", f"{env.base}/api/sessions/{sid}/poses?start={start}"
                                   f"&end={start + 10}&format=bin")
        assert status == 200 and isinstance(blob, bytes)
        series = decode_chunk(blob)
        assert len(blob) == HEADER_SIZE + BYTES_PER_FRAME * len(series)
        assert all(start <= t < start + 10 for t in series.times)
        parts.append(series)
    frames = np.concatenate([p.frames for p in parts])
    assert frames.tolist() == whole["frames"]  # no row twice, none missing
    image = np.concatenate([p.image for p in parts])
    expected = np.array([[[math.nan if v is None else v for v in lm] for lm in f]
                         for f in whole["image"]], np.float32)
    assert np.allclose(image[:, :, :3], expected[:, :, :3], atol=1e-5)
    assert np.allclose(image[:, :, 3], expected[:, :, 3], atol=1e-3)
    # bytes per minute of replay, as the page fetches it (25 fps here)
    per_minute = sum(HEADER_SIZE + BYTES_PER_FRAME * len(p) for p in parts) / 15.08 * 60
    assert per_minute < 1.5e6


@pytest.mark.parametrize(("path", "want", "needle"), [
    ("/api/sessions/999/thumbnail", 404, "no session with id 999"),
    ("/api/sessions/abc/thumbnail", 404, "no session"),
    ("/api/sessions/%C2%B2/thumbnail", 404, "no session"),
    ("/api/sessions/%D9%A3/frames", 404, "no session"),
    ("/api/sessions/999/frames", 404, "no session with id 999"),
    (f"/api/sessions/{NAMES['crashed']}/thumbnail", 404, "no video (status interrupted"),
    (f"/api/sessions/{NAMES['crashed']}/frames", 404, "no video was written"),
    (f"/api/sessions/{NAMES['crashed']}/video", 404, "has no video"),
    (f"/api/sessions/{NAMES['missing']}/thumbnail", 404, "is missing"),
    (f"/api/sessions/{NAMES['missing']}/frames", 404, "is missing"),
    (f"/api/sessions/{NAMES['short']}/frames?format=xml", 400, "'json' or 'bin'"),
    (f"/api/sessions/{NAMES['short']}/poses?format=xml", 400, "'json' or 'bin'"),
    (f"/api/sessions/{NAMES['short']}/poses?start=5&end=1&format=bin", 400, "end must not"),
    ("/api/sessions/999/poses?format=bin", 404, "no session with id 999"),
])
def test_bad_requests_get_clear_errors(env: Env, path: str, want: int, needle: str) -> None:
    status, body = http("GET", env.base + path)
    assert status == want, body
    assert isinstance(body, dict) and needle in body["message"], body


def test_crashed_session_still_has_its_poses(env: Env) -> None:
    status, blob = http("GET", f"{env.base}/api/sessions/{NAMES['crashed']}/poses"
                               "?start=0&end=10&format=bin")
    assert status == 200 and len(decode_chunk(blob)) == 73


def test_deleted_session_is_gone_everywhere(env: Env) -> None:
    sid = NAMES["missing"]
    status, _ = http("DELETE", f"{env.base}/api/sessions/{sid}")
    assert status == 200
    for path in ("", "/thumbnail", "/frames", "/poses?format=bin"):
        status, body = http("GET", f"{env.base}/api/sessions/{sid}{path}")
        assert status == 404 and "no session" in body["message"], (path, body)


def test_ghost_stats_route(env: Env) -> None:
    status, body = http("GET", f"{env.base}/api/ghost/stats")
    assert status == 200 and body == {"players": [], "created": 0}
