"""The export functions on sessions made from ../shared/media clips (no daemon).

- stream copy: the whole session has the recording's frames (bit-identical) and duration; a
  range starts at the keyframe at or before ``start_s``, found here independently with
  PyAV's own keyframe flags;
- burned-in skeleton: decodes, has the expected frame count and timing (slow motion
  re-times, never duplicates), joint-coloured pixels sit at the recorded image landmarks
  and nowhere else (a shifted skeleton fails the same check);
- CSV/JSON: read back to exactly the stored pose values, with names and units;
- drawing geometry and pose matching.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from climbd.drawing import DEFAULT_STYLE, SkeletonStyle, draw_skeleton, skeleton_geometry
from climbd.errors import DiskFullError, ExportError
from climbd.export.clip import export_clip
from climbd.export.common import ExportCancelled
from climbd.export.overlay import export_overlay, match_poses
from climbd.export.posedata import (
    ATTEMPT_COLUMNS,
    CSV_COLUMNS,
    UNITS,
    read_csv,
    read_json,
    write_csv,
    write_json,
)
from climbd.pose import LANDMARK_NAMES, POSE_CONNECTIONS
from climbd.storage import Database, PoseSeries, SessionRecord, probe
from climbd.visibility import SYSTEM, viewing
from tests.conftest import STEEPWALL
from tests.export_support import add_video_session, copy_template, tmpfs


@pytest.fixture(autouse=True)
def _as_system() -> Iterator[None]:
    """These tests use the catalog directly, as the appliance does: outside a request
    nothing is visible (climbd.visibility fails closed) unless the system viewer is set."""
    with viewing(SYSTEM):
        yield


pytestmark = pytest.mark.integration


def _decode(path: Path) -> list[tuple[float, np.ndarray]]:
    """(time in s from the first frame, RGB image) of every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    t0 = out[0][0]
    return [(t - t0, im) for t, im in out]


def _keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        assert tb is not None
        return sorted(float((p.pts or 0) * tb) for p in c.demux(s) if p.size and p.is_keyframe)


@pytest.fixture
async def short_session(tmp_path: Path, media: Path
                        ) -> AsyncIterator[tuple[Database, Path, SessionRecord]]:
    """Session 1 = climb_short_2s.mp4 ingested with pose, in a fresh copy of the state."""
    state = copy_template(tmp_path / "state")
    db = await Database.open(state / "climbd.db")
    try:
        yield db, state, await db.get_session(1)
    finally:
        await db.close()


# -- (a) stream copy -----------------------------------------------------------------------
async def test_clip_of_whole_session_has_the_recorded_frames_and_duration(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    _, state, rec = short_session
    video = state / rec.video_path
    result = await asyncio.to_thread(export_clip, video, tmp_path / "clip.mp4")
    src, out = probe(video), probe(result.path)
    assert (out.frames, out.width, out.height) == (src.frames, src.width, src.height)
    assert out.frames == rec.frame_count == result.frames
    assert out.duration_s == pytest.approx(src.duration_s, abs=1e-6)
    assert result.actual_start_s == 0 and result.actual_end_s == pytest.approx(src.duration_s)
    a, b = _decode(video), _decode(result.path)
    assert [round(t, 4) for t, _ in a] == [round(t, 4) for t, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


@pytest.mark.parametrize(("start", "end"), [(11.0, 12.5), (3.0, 5.0), (10.0, 11.0)])
async def test_clip_range_starts_at_the_keyframe_at_or_before_start(
        tmp_path: Path, media: Path, start: float, end: float) -> None:
    state = tmp_path / "state"
    db = await Database.open(state / "climbd.db")
    try:
        rec = await add_video_session(db, state, STEEPWALL)
    finally:
        await db.close()
    video = state / rec.video_path
    keys = _keyframe_times(video)
    assert len(keys) >= 2, "the clip should have several GOPs"
    expected_start = max(k for k in keys if k <= start + 1e-9)
    result = await asyncio.to_thread(export_clip, video, tmp_path / "clip.mp4", start, end)
    assert result.actual_start_s == pytest.approx(expected_start, abs=1e-6)
    assert "keyframe" in result.note and f"{expected_start:.3f}" in result.note
    # every source frame shown in [keyframe, end) is in the clip, bit-identical, and the
    # clip holds at most a couple of extra reference frames (B-frame reorder depth)
    src = {round(t, 4): im for t, im in _decode(video)}
    wanted = sorted(t for t in src if expected_start - 1e-6 <= t < end - 1e-6)
    clip = _decode(result.path)
    got = {round(expected_start + t, 4): im for t, im in clip}
    assert set(wanted) <= set(got)
    assert len(clip) - len(wanted) <= 2
    assert all(np.array_equal(src[t], got[t]) for t in wanted)
    assert probe(result.path).frames == result.frames == len(clip)
    assert result.actual_end_s >= end - 1e-6 - 1 / 25


async def test_clip_rejects_a_range_without_frames(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    _, state, rec = short_session
    with pytest.raises(ExportError, match="no video frame"):
        export_clip(state / rec.video_path, tmp_path / "x.mp4", 100.0, 200.0)
    assert not list(tmp_path.glob("x.mp4*"))


# -- (b) skeleton burned in ----------------------------------------------------------------
def _joint_hits(frame: np.ndarray, landmarks: np.ndarray,
                style: SkeletonStyle = DEFAULT_STYLE) -> tuple[int, int]:
    """(hits, checked): visible in-frame joints whose centre pixel has the joint colour."""
    h, w = frame.shape[:2]
    sk = skeleton_geometry(landmarks, w, h, style.min_visibility)
    _, radius = style.sizes(w, h)
    hits = checked = 0
    for i in np.flatnonzero(sk.visible):
        c, r = (round(float(v)) for v in sk.points[i])
        if not (radius <= c < w - radius and radius <= r < h - radius):
            continue
        checked += 1
        red, green, blue = (int(v) for v in frame[r, c])
        hits += red > 150 and green < 110 and blue < 110
    return hits, checked


def _far_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """True where a pixel is well away from every drawn joint and bone."""
    h, w = shape[:2]
    thickness, radius = DEFAULT_STYLE.sizes(w, h)
    near = np.zeros((h, w, 3), np.uint8)
    draw_skeleton(near, landmarks, SkeletonStyle((255, 255, 255), (255, 255, 255),
                                                 thickness + 8, radius + 5))
    return near[:, :, 0] == 0


def _reddish(im: np.ndarray) -> np.ndarray:
    im = im.astype(np.int16)
    return (im[:, :, 0] > 150) & (im[:, :, 1] < 110) & (im[:, :, 2] < 110)


def _skeleton_ok(overlay: np.ndarray, original: np.ndarray, landmarks: np.ndarray) -> bool:
    """The check of the test: joints at the landmarks, and the picture unchanged (no joint
    colour added) away from the skeleton."""
    hits, checked = _joint_hits(overlay, landmarks)
    far = _far_mask(overlay.shape, landmarks)
    added_red = int((_reddish(overlay) & ~_reddish(original) & far).sum())
    diff = np.abs(overlay.astype(np.int16) - original.astype(np.int16)).mean(axis=2)
    return checked >= 5 and hits >= 0.9 * checked and added_red <= 20 \
        and float(diff[far].mean()) < 6.0


async def test_overlay_draws_the_recorded_skeleton_at_the_image_landmarks(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    db, state, rec = short_session
    poses = await db.poses(rec.id)
    assert len(poses) > 0
    result = await asyncio.to_thread(export_overlay, state / rec.video_path,
                                     tmp_path / "overlay.mp4", poses, fps=rec.fps)
    info = probe(result.path)
    assert info.frames == result.frames == rec.frame_count
    assert info.duration_s == pytest.approx(rec.duration_s, abs=1e-3)
    out, src = _decode(result.path), _decode(state / rec.video_path)
    assert len(out) == len(src)
    by_time = {round(t, 3): i for i, t in enumerate(poses.times)}
    sampled = 0
    for k in range(0, len(out), 12):
        t = round(src[k][0], 3)
        if t not in by_time:
            continue
        lm = poses.image[by_time[t]]
        assert _skeleton_ok(out[k][1], src[k][1], lm), f"frame {k} at {t} s"
        # the same check must fail for a skeleton that is not where the pose is
        shifted = lm.copy()
        shifted[:, 0] = np.where(shifted[:, 0] < 0.5, shifted[:, 0] + 0.3, shifted[:, 0] - 0.3)
        assert not _skeleton_ok(out[k][1], src[k][1], shifted)
        # and the untouched source frame fails it too
        assert not _skeleton_ok(src[k][1], src[k][1], lm)
        sampled += 1
    assert sampled >= 5


async def test_overlay_slow_motion_retimes_frames_without_duplicating(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    db, state, rec = short_session
    poses = await db.poses(rec.id)
    start, end, speed = 0.5, 1.5, 0.25
    result = await asyncio.to_thread(
        export_overlay, state / rec.video_path, tmp_path / "slow.mp4", poses, fps=rec.fps,
        start_s=start, end_s=end, speed=speed)
    src_times = [t for t, _ in _decode(state / rec.video_path) if start - 1e-6 <= t < end - 1e-6]
    out = _decode(result.path)
    assert len(out) == len(src_times) == result.frames
    expected = [(t - src_times[0]) / speed for t in src_times]
    assert [t for t, _ in out] == pytest.approx(expected, abs=2e-3)
    assert result.actual_start_s == pytest.approx(src_times[0])
    assert probe(result.path).duration_s == pytest.approx(
        (src_times[-1] - src_times[0] + 1 / rec.fps) / speed, abs=2e-3)
    frames = [im for _, im in out]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))


async def test_overlay_cancel_and_full_disk_leave_no_partial_file(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    db, state, rec = short_session
    poses = await db.poses(rec.id)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(ExportCancelled):
        export_overlay(state / rec.video_path, tmp_path / "c.mp4", poses, fps=rec.fps,
                       should_stop=stop)
    assert not list(tmp_path.glob("c.mp4*"))
    with tmpfs(tmp_path / "small", "64k") as small:
        with pytest.raises(DiskFullError, match="partial file was removed"):
            export_overlay(state / rec.video_path, small / "o.mp4", poses, fps=rec.fps)
        assert list(small.iterdir()) == []


# -- (c) pose data -------------------------------------------------------------------------
def _same(a: PoseSeries, b: PoseSeries) -> None:
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.times, b.times)
    assert np.array_equal(a.image, b.image, equal_nan=True)
    assert np.array_equal(a.world, b.world, equal_nan=True)


async def test_csv_and_json_round_trip_to_the_stored_values(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    db, _, rec = short_session
    poses = await db.poses(rec.id)
    assert len(poses) > 10 and np.isnan(poses.image[:, :, 4]).all()  # legacy: no presence
    c = write_csv(poses, tmp_path / "p.csv")
    j = write_json(poses, tmp_path / "p.json", session={"id": rec.id, "fps": rec.fps},
                   range_s=(None, None))
    assert c.frames == j.frames == len(poses)
    _same(read_csv(c.path), poses)
    _same(read_json(j.path), poses)
    rows = list(csv.reader(c.path.read_text().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS + ATTEMPT_COLUMNS and len(rows) == 1 + 33 * len(poses)
    assert [r[3] for r in rows[1:34]] == list(LANDMARK_NAMES)
    assert any(c.endswith("_m") for c in CSV_COLUMNS) and "t_s" in CSV_COLUMNS
    doc = json.loads(j.path.read_text())
    assert doc["landmarks"] == list(LANDMARK_NAMES) and doc["units"] == UNITS
    assert "metres" in doc["units"]["world"] and "seconds" in doc["units"]["t_s"]
    assert doc["frames"][0]["image"][0][4] is None  # NaN presence -> null


async def test_pose_range_export_matches_the_database_window(
        short_session: tuple[Database, Path, SessionRecord], tmp_path: Path) -> None:
    db, _, rec = short_session
    window = await db.poses(rec.id, 0.5, 1.2)
    result = write_csv(window, tmp_path / "w.csv")
    back = read_csv(result.path)
    _same(back, window)
    assert back.times.min() >= 0.5 and back.times.max() < 1.2


# -- drawing and matching ------------------------------------------------------------------
def test_skeleton_geometry_uses_image_landmarks_and_visibility() -> None:
    lm = np.zeros((33, 5), np.float32)
    lm[:, 0], lm[:, 1], lm[:, 3], lm[:, 4] = 0.25, 0.75, 0.9, np.nan
    lm[0, 3] = 0.1  # nose hidden
    sk = skeleton_geometry(lm, 400, 200)
    assert sk.points[5] == pytest.approx((100.0, 150.0))
    assert not sk.visible[0] and sk.visible[1:].all()
    assert all(0 not in pair for pair in sk.bones)
    assert len(sk.bones) == sum(0 not in pair for pair in POSE_CONNECTIONS)
    with pytest.raises(ValueError):
        skeleton_geometry(np.zeros((17, 5)), 10, 10)


def test_draw_skeleton_draws_only_near_the_pose() -> None:
    rng = np.random.default_rng(1)
    lm = np.zeros((33, 5), np.float32)
    lm[:, :2] = rng.uniform(0.3, 0.7, (33, 2))
    lm[:, 3], lm[:, 4] = 1.0, np.nan
    image = np.zeros((240, 320, 3), np.uint8)
    draw_skeleton(image, lm)
    for x, y in (lm[:, :2] * (320, 240)).tolist():
        assert tuple(image[round(y), round(x)]) == DEFAULT_STYLE.joint_color
    assert image[:60].max() == 0 and image[:, :80].max() == 0  # y, x < 0.25: untouched


def test_match_poses_nearest_within_half_a_frame() -> None:
    frames = np.array([0.0, 1 / 30, 2 / 30, 3 / 30, 10.0])
    poses = np.array([0.0, 2 / 30 + 0.001, 3 / 30 - 0.01])
    assert match_poses(frames, poses, 0.5 / 30).tolist() == [0, -1, 1, 2, -1]
    assert match_poses(frames, np.zeros(0), 0.1).tolist() == [-1] * 5


def test_json_is_strict_json(tmp_path: Path) -> None:
    series = PoseSeries(np.array([3]), np.array([0.1]), np.full((1, 33, 5), np.nan),
                        np.full((1, 33, 3), math.inf))
    # infinities are not valid JSON: the writer refuses rather than emit a broken file
    with pytest.raises(ValueError):
        write_json(series, tmp_path / "x.json")
    assert not list(tmp_path.glob("x.json*"))


def test_clip_of_a_missing_video_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="missing"):
        export_clip(tmp_path / "nope.mp4", tmp_path / "x.mp4")
