"""Attempt detection on every clip of ../shared/media against ATTEMPTS.md, and on an empty wall.

BlazePose runs once per clip per test session (the ``clip_poses`` fixture caches it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from climbd.attempts import detect_attempts
from climbd.attempts.analysis import analyse_series
from climbd.ingest import decode_rgb_frames
from climbd.pose import PoseEstimator
from tests.attempts_support import empty_wall_clip as _empty_wall
from tests.attempts_support import read_attempt_labels
from tests.conftest import MEDIA, STEEPWALL

pytestmark = pytest.mark.media

CLIPS = sorted(p.name for p in MEDIA.glob("*.mp4")) if MEDIA.exists() else []


class ClipPoses:
    """Every frame's pose of one video: times, image landmarks (None: nobody), world."""

    def __init__(self, path: Path):
        self.times: list[float] = []
        self.image: list[np.ndarray | None] = []
        self.world: list[np.ndarray | None] = []
        with PoseEstimator() as est:
            for i, t, rgb in decode_rgb_frames(path):
                pose = est.process(rgb, i, t)
                self.times.append(t)
                self.image.append(pose.image)
                self.world.append(pose.world)
                self.height, self.width = rgb.shape[:2]
        self.duration = self.times[-1] + (self.times[1] - self.times[0])

    def detect(self) -> list[Any]:
        return detect_attempts(self.times, self.image, aspect=self.width / self.height,
                               start_s=0.0, end_s=self.duration)


@pytest.fixture(scope="session")
def clip_poses(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ClipPoses]:
    cache: dict[str, ClipPoses] = {}

    def get(name: str) -> ClipPoses:
        if name not in cache:
            path = MEDIA / name if name != "empty_wall" else _empty_wall(
                tmp_path_factory.mktemp("empty") / "empty_wall.mp4")
            cache[name] = ClipPoses(path)
        return cache[name]

    return get


LABELS = read_attempt_labels(MEDIA / "ATTEMPTS.md") if (MEDIA / "ATTEMPTS.md").exists() else {}


def test_every_clip_has_labels() -> None:
    assert CLIPS, f"no clips in {MEDIA}"
    assert set(CLIPS) <= set(LABELS), f"clips without labels in ATTEMPTS.md: {CLIPS}"


@pytest.mark.parametrize("clip", CLIPS)
def test_attempts_within_the_labelled_windows(clip: str, clip_poses: Callable[[str], ClipPoses]
                                              ) -> None:
    label = LABELS[clip]
    found = clip_poses(clip).detect()
    assert len(found) in label["counts"], (clip, found)
    for a in found:
        lo, hi = label["start"]
        assert lo <= a.start_s <= hi, (clip, a)
        rule = label["end"]
        if rule[0] == "window":
            assert a.end_s is not None and rule[1] <= a.end_s <= rule[2], (clip, a)
        elif rule[0] == "none_before":
            assert a.end_s is None or a.end_s >= rule[1], (clip, a)
        else:
            assert a.end_s is None, (clip, a)


@pytest.mark.parametrize("clip", CLIPS)
def test_same_attempts_at_half_the_frame_rate(clip: str,
                                              clip_poses: Callable[[str], ClipPoses]) -> None:
    """Every second frame (12.5–15 fps: harder than the 25–60 fps we support) still lands in
    the windows: thresholds are in seconds, not frames."""
    cp = clip_poses(clip)
    label = LABELS[clip]
    found = detect_attempts(cp.times[::2], cp.image[::2], aspect=cp.width / cp.height,
                            start_s=0.0, end_s=cp.duration)
    assert len(found) in label["counts"]
    for a in found:
        assert label["start"][0] <= a.start_s <= label["start"][1]


def test_no_attempt_on_an_empty_wall(clip_poses: Callable[[str], ClipPoses]) -> None:
    cp = clip_poses("empty_wall")
    assert len(cp.times) == 75
    assert cp.detect() == []


def test_metrics_on_the_steep_wall_are_plausible(clip_poses: Callable[[str], ClipPoses]
                                                 ) -> None:
    cp = clip_poses(STEEPWALL.name)
    keep = [i for i, im in enumerate(cp.image) if im is not None]
    t = np.array([cp.times[i] for i in keep])
    im = np.stack([cp.image[i] for i in keep])  # type: ignore[misc]
    w = np.stack([cp.world[i] for i in keep])  # type: ignore[misc]
    (a,) = analyse_series(t, im, w, width=cp.width, height=cp.height, duration_s=cp.duration)
    m = a["metrics"]
    # a short steep boulder: the hips rise by about a body height, never tens of metres
    assert 0.3 < m["height_gained_m"] < 3.0
    assert m["hip_path_m"] >= m["height_gained_m"]
    assert 0 < m["economy"] <= 1
    assert 12.5 < m["time_on_wall_s"] < 14.5
    angles = [x for x in m["angles"]["left_elbow"] if x is not None]
    assert angles and min(angles) > 20 and max(angles) <= 180


def test_ingest_json_lists_the_attempts(tmp_path: Path) -> None:
    """``climbd ingest --json`` (a real subprocess) reports the attempts, and the stored
    session carries them."""
    import json
    import sqlite3
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run(
        [sys.executable, "-m", "climbd", "ingest", "--json", str(STEEPWALL),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    label = LABELS[STEEPWALL.name]
    (a,) = summary["attempts"]
    assert set(a) == {"start_s", "end_s"}
    assert label["start"][0] <= a["start_s"] <= label["start"][1]
    assert label["end"][1] <= a["end_s"] <= label["end"][2]
    con = sqlite3.connect(tmp_path / "state" / "climbd.db")
    rows = con.execute("SELECT start_s, end_s, metrics FROM attempts").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(a["start_s"], a["end_s"])]
    assert json.loads(rows[0][2])["height_gained_m"] > 0
