"""`climbd ingest` on every clip: same frames and detections as MediaPipe run directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from climbd.ingest import decode_rgb_frames
from climbd.storage import probe
from tests.conftest import CLIPS, REPO

pytestmark = pytest.mark.media


def _reference(path: Path) -> tuple[int, list[int], np.ndarray]:
    """MediaPipe's own answer on the same frames: frame count, detected indices, x/y."""
    from mediapipe.python.solutions import pose as mp_pose

    detected, xy = [], []
    n = 0
    with mp_pose.Pose(static_image_mode=False, model_complexity=1) as pose:
        for i, _t, rgb in decode_rgb_frames(path):
            n += 1
            r = pose.process(rgb)
            if r.pose_landmarks is not None:
                detected.append(i)
                xy.append([(lm.x, lm.y) for lm in r.pose_landmarks.landmark])
    return n, detected, np.array(xy, np.float32)


def test_ingest_every_clip_matches_mediapipe(tmp_path: Path, media: Path) -> None:
    state = tmp_path / "state"
    out = subprocess.run(
        [sys.executable, "-m", "climbd", "ingest", *map(str, CLIPS), "--state-dir", str(state),
         "--json"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(CLIPS)

    import sqlite3

    from climbd.storage import decode_chunk

    for clip, res in zip(CLIPS, results, strict=True):
        n, detected, xy = _reference(clip)
        assert res["frames"] == n, clip.name
        assert res["frames_with_pose"] == len(detected), clip.name
        assert set(res) >= {"id", "name", "frames", "frames_with_pose", "duration_s", "video"}
        video = probe(state / res["video"])
        assert video.frames == n  # every frame kept (copied, or re-encoded to a 1 s GOP)
        assert res["duration_s"] == pytest.approx(video.duration_s, abs=1e-3)

        con = sqlite3.connect(state / "climbd.db")
        blobs = [b for (b,) in con.execute(
            "SELECT blob FROM pose_chunks WHERE session_id=? ORDER BY t_start", (res["id"],))]
        con.close()
        frames = np.concatenate([decode_chunk(b).frames for b in blobs])
        image = np.concatenate([decode_chunk(b).image for b in blobs])
        assert frames.tolist() == detected
        np.testing.assert_allclose(image[:, :, :2], xy, atol=7e-5)  # stored as uint16


def test_ingest_bad_files_are_clear_errors(tmp_path: Path, media: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    out = subprocess.run(
        [sys.executable, "-m", "climbd", "ingest", str(junk), str(tmp_path / "missing.mp4"),
         "--state-dir", str(tmp_path / "s"), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 1
    assert "junk.mp4" in out.stderr and "missing.mp4" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() == ""
