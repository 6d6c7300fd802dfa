"""The main job end to end: `climbd run` on a real clip, recordings over HTTP, crashes.

Each test runs the real daemon as a subprocess on 127.0.0.1 with a real clip from
../shared/media and reads the results back from the real SQLite file and video files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from climbd.storage import decode_chunk, probe
from tests.conftest import STEEPWALL, wait_until

pytestmark = [pytest.mark.media, pytest.mark.timing]  # wall-clock rates and delays

FPS = 25.0  # climb_steepwall_static.mp4 is 25 fps CFR


def _ffprobe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["format"]["duration"])


def _pose_rows(db: Path, session_id: int) -> tuple[np.ndarray, np.ndarray]:
    con = sqlite3.connect(db)
    try:
        blobs = [r[0] for r in con.execute(
            "SELECT blob FROM pose_chunks WHERE session_id = ? ORDER BY t_start", (session_id,))]
    finally:
        con.close()
    parts = [decode_chunk(b) for b in blobs]
    frames = np.concatenate([p.frames for p in parts]) if parts else np.zeros(0)
    times = np.concatenate([p.times for p in parts]) if parts else np.zeros(0)
    return frames, times


def test_run_record_over_http_and_read_back(daemon_factory, media: Path) -> None:
    d = daemon_factory(STEEPWALL)
    d.wait_ready()
    # pose tracking settles into its steady rate (keeping up with the 25 fps source)
    d.health_until(lambda h: h["pose"]["fps"] >= 0.9 * FPS, 60)
    t_start = time.monotonic()
    status, started = d.post("/api/recordings/start", {"name": "steep", "climber": "Ana",
                                                       "pre_roll_s": 0})
    assert status == 201, started
    assert started["status"] == "recording" and started["name"] == "steep"
    d.health_until(lambda h: h["recording"]["elapsed_s"] >= 6.0)
    status, done = d.post("/api/recordings/stop")
    wall = time.monotonic() - t_start
    assert status == 200, done
    assert done["status"] == "completed" and done["climber"] == "Ana"

    # frame count: every source frame in the recorded span, none lost or doubled
    n = done["frame_count"]
    assert n == pytest.approx(done["duration_s"] * FPS, abs=0.5)
    # the span: from the keyframe at or before the trigger (≤ one GOP early) to the stop
    assert wall - 0.3 <= done["duration_s"] <= wall + 1.0 + 0.3

    # pose on ≥ 95 % of the frames once the frames live pose skipped are filled in (pose
    # backfill), each row naming its frame, at the source's timestamps
    assert done["frames_analyzed"] <= n

    def complete() -> dict | None:
        status, rec = d.get(f"/api/sessions/{done['id']}")
        return rec if status == 200 and rec["pose_status"] == "complete" else None

    done = {**done, **wait_until(complete, 300, interval=0.2)}
    assert done["frames_analyzed"] == n
    assert done["frames_with_pose"] >= 0.95 * n, d.log()
    frames, times = _pose_rows(d.state_dir / "climbd.db", done["id"])
    assert len(frames) == done["frames_with_pose"]
    assert frames.min() >= 0 and frames.max() < n
    assert np.all(np.diff(frames) > 0)
    np.testing.assert_allclose(times, frames / FPS, atol=1e-6)

    # the video plays back with the same duration ± one GOP
    status, body = d.get(f"/api/sessions/{done['id']}/video")
    assert status == 200 and body[4:8] == b"ftyp"
    video = d.state_dir / "sessions" / str(done["id"]) / "video.mp4"
    info = probe(video)
    assert info.frames == n
    assert _ffprobe_duration(video) == pytest.approx(done["duration_s"], abs=1.0)

    # lazy loading by time range returns exactly the rows in that range
    status, window = d.get(f"/api/sessions/{done['id']}/poses?start=1&end=2")
    assert status == 200
    assert all(1 <= t <= 2 for t in window["t"]) and len(window["t"]) >= 0.95 * FPS
    assert len(window["image"][0]) == 33 and len(window["image"][0][0]) == 5
    assert len(window["world"][0][0]) == 3


def test_save_last_and_pre_roll(daemon_factory, media: Path) -> None:
    d = daemon_factory(STEEPWALL)
    d.wait_ready()
    # enough buffered for 3 s and for a 4 s pre-roll that reaches back to a keyframe
    d.health_until(lambda h: h["recording"]["pre_roll_available_s"] >= 5.5)
    status, saved = d.post("/api/recordings/save-last", {"seconds": 3})
    assert status == 201, saved
    assert saved["status"] == "completed"
    # starts at the keyframe at or before now-3 s: between 3 s and 3 s + one GOP long
    assert 3.0 - 0.1 <= saved["duration_s"] <= 4.0 + 0.2
    assert saved["frame_count"] == pytest.approx(saved["duration_s"] * FPS, abs=0.5)

    status, started = d.post("/api/recordings/start", {"pre_roll_s": 4})
    assert status == 201
    assert 4.0 <= started["pre_roll_s"] <= 5.1
    d.health_until(lambda h: h["recording"]["elapsed_s"] >= started["pre_roll_s"] + 1.0)
    status, done = d.post("/api/recordings/stop")
    assert status == 200 and done["duration_s"] >= 5.0 - 0.1


def test_kill_9_mid_recording_then_restart(daemon_factory, media: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    d = daemon_factory(STEEPWALL, state_dir=state)
    d.wait_ready()
    status, started = d.post("/api/recordings/start", {"name": "crash", "pre_roll_s": 0})
    assert status == 201
    rec_start_wall = started["created_at"] - started["pre_roll_s"]
    d.health_until(lambda h: h["recording"]["elapsed_s"] >= 4.0)
    killed_at = time.time()
    d.kill()  # SIGKILL: no chance to clean up
    recorded_s = killed_at - rec_start_wall

    con = sqlite3.connect(state / "climbd.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    row = con.execute("SELECT status, frame_count, duration_s FROM sessions WHERE id = ?",
                      (started["id"],)).fetchone()
    con.close()
    assert row[0] == "recording"
    # committed at least once a second: frames up to ≤ 1 s before the kill are there
    assert row[1] >= (recorded_s - 1.0 - 0.2) * FPS, (row, recorded_s)
    _, times = _pose_rows(state / "climbd.db", started["id"])
    assert len(times) and times.max() >= recorded_s - 1.0 - 0.3 - 0.2

    d2 = daemon_factory(STEEPWALL, state_dir=state)
    d2.wait_ready()
    status, s = d2.get(f"/api/sessions/{started['id']}")
    assert status == 200 and s["status"] == "interrupted", s
    assert "interrupted" in (s["error"] or "")
    video = state / "sessions" / str(started["id"]) / "video.mp4"
    assert _ffprobe_duration(video) >= recorded_s - 2.0 - 0.2
    status, body = d2.get(f"/api/sessions/{started['id']}/poses")
    assert status == 200 and len(body["t"]) == len(times)

    # new recordings work
    assert d2.post("/api/recordings/start", {"pre_roll_s": 0})[0] == 201
    d2.health_until(lambda h: h["recording"]["frames"] >= FPS)
    status, done = d2.post("/api/recordings/stop")
    assert status == 200 and done["status"] == "completed" and done["frame_count"] > 0


def test_full_disk_fails_the_recording_and_keeps_serving(
        daemon_factory, media: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = tmp_path / "climbd.toml"
        # retention's free-space floor would refuse to start on this tiny disk: turn it off,
        # this test is about a disk that fills *during* a recording
        cfg.write_text("[storage]\nreserve_mb = 0.25\n[recording]\npre_roll_s = 1.0\n"
                       "[retention]\nfloor_mb = 0\nheadroom_s = 0\n")
        d = daemon_factory(STEEPWALL, "--config", str(cfg), state_dir=mnt / "state")
        d.wait_ready()
        status, started = d.post("/api/recordings/start", {"name": "fills", "pre_roll_s": 0})
        assert status == 201, started
        sid = started["id"]
        s: dict = {}

        def ended() -> bool:
            nonlocal s
            s = d.get(f"/api/sessions/{sid}")[1]
            return bool(s["status"] != "recording")

        wait_until(ended, 60, 0.2, lambda: f"still recording: {s}")
        assert s["status"] == "failed", s
        assert "full" in s["error"].lower() or "space" in s["error"].lower(), s["error"]
        # the daemon keeps serving and says why recording stopped
        status, health = d.get("/api/health")
        assert status == 200 and health["recording"]["state"] == "idle"
        assert health["recording"]["last_error"]
        # what was committed stays readable
        assert s["frame_count"] > 0
        status, poses = d.get(f"/api/sessions/{sid}/poses")
        assert status == 200 and len(poses["t"]) > 0
        con = sqlite3.connect(mnt / "state" / "climbd.db")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        # a second attempt on a full disk gives a clear error, not a crash
        status, body = d.post("/api/recordings/start", {"pre_roll_s": 0})
        if status == 201:  # it started (a little space was freed): it must end cleanly
            d.health_until(lambda h: h["recording"]["state"] == "idle"
                           or h["recording"]["frames"] >= FPS)
            d.post("/api/recordings/stop")
        else:
            assert status in (500, 507) and body["message"], body
        assert d.get("/api/health")[0] == 200
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_bad_config_starts_in_safe_mode(daemon_factory, tmp_path: Path) -> None:
    """A typo in the config keeps the API reachable and says what is wrong."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[capture]\nframerate = 30\n")
    d = daemon_factory(STEEPWALL, "--config", str(cfg))
    health = d.wait_ready(capture=False)
    assert health["status"] == "safe_mode"
    assert "capture.framerate: unknown key" in health["safe_mode"]
    status, body = d.post("/api/recordings/start", {})
    assert status == 503 and "no video" in body["message"]
    assert d.get("/api/sessions")[0] == 200
    strict = subprocess.run(
        [sys.executable, "-m", "climbd", "run", "--strict", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60)
    assert strict.returncode == 2 and "capture.framerate" in strict.stderr


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_video_source_is_reported_and_the_daemon_serves(
        daemon_factory, tmp_path: Path, kind: str) -> None:
    source = tmp_path / f"{kind}.mp4"
    if kind == "corrupt":
        source.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\xde\xad\xbe\xef" * 5000)
    d = daemon_factory(source)
    d.wait_ready(capture=False)
    health = d.health_until(lambda h: h["capture"]["state"] == "lost", 20)
    assert health["capture"]["state"] == "lost" and health["status"] == "degraded"
    assert source.name in health["capture"]["error"]
    status, body = d.post("/api/recordings/start", {})
    assert status == 503 and body["error"] == "NoMediaYet"
    assert d.get("/api/sessions")[0] == 200
