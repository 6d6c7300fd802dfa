"""Pose backfill: a recording whose live pose skipped frames ends with pose on every frame.

Real parts: the in-process daemon with the fake camera (tests/fakes.py) playing a real clip,
real BlazePose live and in the backfill worker process, a real SQLite file. The only seam is
the live pose estimator, slowed down (it sleeps after each frame, as a slow box's inference
would take longer), so live pose skips frames for sure on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from climbd.backfill.service import PoseBackfill
from climbd.config import Config, PoseConfig
from climbd.daemon import Daemon
from climbd.ingest import decode_rgb_frames
from climbd.pose import Pose, PoseEstimator
from climbd.statedir import StateDir
from climbd.storage import Database, PoseSeries, finalize
from climbd.storage.backfill import BackfillStore
from climbd.visibility import SYSTEM, viewing
from tests.conftest import SHORT, async_wait_until
from tests.fakes import CameraRig
from tests.securitykit import admin_headers

#: MediaPipe runs live, in the worker and for the reference: slow on a loaded machine
pytestmark = [pytest.mark.media, pytest.mark.timeout(1200)]


class SlowEstimator(PoseEstimator):
    """BlazePose that takes at least ``min_s`` a frame (a slower CPU)."""

    min_s = 0.1

    def process(self, rgb: np.ndarray, frame_number: int = 0, timestamp: float = 0.0) -> Pose:
        t0 = time.perf_counter()
        pose = super().process(rgb, frame_number, timestamp)
        time.sleep(max(0.0, self.min_s - (time.perf_counter() - t0)))
        return pose


def reference(video: Path) -> PoseSeries:
    """One tracker over every frame of ``video``, in order (what the fill must equal)."""
    poses = []
    with PoseEstimator(PoseConfig()) as est:
        for i, t, rgb in decode_rgb_frames(video):
            poses.append(est.process(rgb, i, t))
    return PoseSeries.from_poses(poses, time_origin=0.0)


@pytest.fixture(scope="module")
def short_reference(media: Path) -> PoseSeries:
    return reference(SHORT)


@pytest.fixture
async def daemon(tmp_path: Path, media: Path) -> AsyncIterator[Daemon]:
    config = Config.model_validate({
        "pose": {"workers": 1}, "server": {"host": "127.0.0.1", "port": 0},
        "capture": {"source": "/dev/video9"}, "recording": {"pre_roll_s": 0},
    })
    d = Daemon(config, tmp_path / "state", source_factory=CameraRig(SHORT, fps=30).open,
               pose_factory=lambda: SlowEstimator(config.pose))
    await d.start()
    yield d
    await d.stop()


async def test_recording_with_skipped_live_pose_is_backfilled(daemon: Daemon) -> None:
    d = daemon
    await async_wait_until(lambda: d.pipeline.pose_results >= 3, 60, what="live pose")
    async with aiohttp.ClientSession(headers=await admin_headers(d)) as http:
        base = f"http://127.0.0.1:{d.port}"
        async with http.post(base + "/api/recordings/start", json={"name": "fill"}) as r:
            assert r.status == 201, await r.text()
            sid = (await r.json())["id"]
        await async_wait_until(lambda: d.recorder.status()["frames"] >= 60, 60)
        async with http.post(base + "/api/recordings/stop") as r:
            assert r.status == 200
            stopped = await r.json()
        # live pose (>= 0.1 s a frame at 30 fps) analysed about a third of the frames
        assert stopped["frames_analyzed"] < 0.7 * stopped["frame_count"], stopped
        assert stopped["pose_status"] in ("live", "backfilling")

        async def complete() -> dict[str, Any] | None:
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                body = await r.json()
            return body if body["pose_status"] == "complete" else None

        done = await async_wait_until(complete, 300, interval=0.5, what="backfill complete")
        assert done["frames_analyzed"] == done["frame_count"] == stopped["frame_count"]
        health = d.health()
        assert health["backfill"]["completed"] == 1
        assert health["backfill"]["priority"]["sched"] == "idle"
        assert health["backfill"]["priority"]["nice"] == 19

    with viewing(SYSTEM):
        filled = await d.db.poses(sid)
    video = d.state_dir / done["video_path"] if "video_path" in done else \
        StateDir(d.state_dir).video(sid)
    ref = await asyncio.to_thread(reference, video)
    # pose on every frame BlazePose finds, at the frame's time, equal to one tracker's run;
    # frames that tracker found nobody in keep a live pose if live pose had one
    assert done["frames_with_pose"] == len(filled) >= len(ref) > 0.9 * done["frame_count"]
    assert len(np.unique(filled.frames)) == len(filled)
    in_ref = np.isin(filled.frames, ref.frames)
    np.testing.assert_array_equal(filled.frames[in_ref], ref.frames)
    np.testing.assert_allclose(filled.times[in_ref], ref.times, atol=1e-3)
    np.testing.assert_allclose(filled.image[in_ref, :, :2], ref.image[:, :, :2], atol=2e-3)
    # the attempts were recomputed from the filled-in pose
    con = sqlite3.connect(d.paths.db)
    try:
        row = con.execute("SELECT frames_with_pose FROM attempt_analyses WHERE session_id=?",
                          (sid,)).fetchone()
        staged = con.execute("SELECT COUNT(*) FROM pose_backfill_chunks").fetchone()[0]
    finally:
        con.close()
    assert row is not None and row[0] == len(filled)
    assert staged == 0


async def _made_session(db: Database, state: Path) -> int:
    """A finished session of SHORT whose live pose analysed nothing (e.g. pose fell over)."""
    rec = await db.create_session(name="resume", width=404, height=720, fps=30)
    video = StateDir(state).video(rec.id)
    video.parent.mkdir(parents=True)
    info = await asyncio.to_thread(finalize, SHORT, video)
    await db.finish_session(rec.id, status="interrupted", frame_count=info.frames,
                            duration_s=info.duration_s,
                            video_path=str(video.relative_to(state)))
    return rec.id


async def test_backfill_resumes_after_restart(tmp_path: Path, short_reference: PoseSeries
                                              ) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = await Database.open(state / "climbd.db")
    try:
        with viewing(SYSTEM):
            sid = await _made_session(db, state)
            store = BackfillStore(db)
            assert await store.pending() == [sid]   # 'live' and not recording: queued at start
            first = PoseBackfill(db, state, PoseConfig(), chunk_s=0.5)
            # the daemon stops (SIGTERM) while the second chunk is being committed: one
            # chunk is in the database, the worker was still running
            stage = first.store.add_chunk
            committing_second = asyncio.Event()

            async def add_chunk(*a: Any, **kw: Any) -> None:
                if await first.store.next_frame(sid) > 0:
                    committing_second.set()
                    await asyncio.Event().wait()   # never returns: cancelled below
                await stage(*a, **kw)

            first.store.add_chunk = add_chunk  # type: ignore[method-assign]
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(committing_second.wait(), 600)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await first.close()
            stopped_at = await store.next_frame(sid)
            rec = await db.get_session(sid)
            assert rec.pose_status == "backfilling", "the first run finished before the stop"
            assert 0 < stopped_at < rec.frame_count
            assert len(await db.poses(sid)) == 0    # staged, not swapped in yet

            second = PoseBackfill(db, state, PoseConfig(), chunk_s=0.5)
            task = asyncio.create_task(second.run())
            try:
                rec = await async_wait_until(
                    lambda: _complete(db, sid), 300, interval=0.2, what="resumed fill")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            filled = await db.poses(sid)
    finally:
        await db.close()
    assert rec.frames_analyzed == rec.frame_count == 73
    # every frame once, in order, as one uninterrupted tracker finds them (the frames after
    # the restart come from a tracker re-acquired over WARMUP_FRAMES: within a few pixels)
    np.testing.assert_array_equal(filled.frames, short_reference.frames)
    assert rec.frames_with_pose == len(filled)
    err = np.abs(filled.image[:, :, :2] - short_reference.image[:, :, :2]).max(axis=(1, 2))
    assert err[:stopped_at].max() < 1e-3
    assert np.median(err[stopped_at:]) < 0.01


async def _complete(db: Database, sid: int) -> Any:
    rec = await db.get_session(sid)
    return rec if rec.pose_status == "complete" else None


async def test_a_stop_while_the_worker_is_spawned_leaves_no_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() during the worker's spawn: the fill stops at once, resumable, no worker left
    running the whole session behind the stopped daemon (it held SIGTERM past 30 s)."""
    state = tmp_path / "state"
    state.mkdir()
    db = await Database.open(state / "climbd.db")
    spawning = asyncio.Event()
    spawned: list[asyncio.subprocess.Process] = []
    real_exec = asyncio.create_subprocess_exec

    async def exec_(*a: Any, **kw: Any) -> asyncio.subprocess.Process:
        spawning.set()
        proc = await real_exec(*a, **kw)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", exec_)
    try:
        with viewing(SYSTEM):
            sid = await _made_session(db, state)
            fill = PoseBackfill(db, state, PoseConfig(), chunk_s=0.5)
            task = asyncio.create_task(fill.fill(sid))
            await asyncio.wait_for(spawning.wait(), 60)
            await fill.close()              # the daemon's stop, mid-spawn
            t0 = time.monotonic()
            rec = await asyncio.wait_for(task, 30)
            took = time.monotonic() - t0
            assert spawned and spawned[0].returncode is not None, "the worker still runs"
            assert rec.pose_status == "backfilling", rec.pose_status  # resumes next start
            assert await fill.store.next_frame(sid) < rec.frame_count
            assert took < 10, f"the fill went on for {took:.1f} s after close()"
    finally:
        await db.close()
