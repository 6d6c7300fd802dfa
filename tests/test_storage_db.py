"""The session catalog on a real SQLite file (WAL), read back by independent connections."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from climbd.errors import DiskFullError, SessionNotFound, StorageError
from climbd.storage import Database, PoseSeries, SessionRecord, decode_chunk
from climbd.storage.database import MIGRATIONS
from climbd.visibility import SYSTEM, viewing
from tests.test_storage_posecodec import make_series


@pytest.fixture(autouse=True)
def _as_system() -> Iterator[None]:
    """These tests use the catalog directly, as the appliance does: outside a request
    nothing is visible (climbd.visibility fails closed) unless the system viewer is set."""
    with viewing(SYSTEM):
        yield


#: the stored world landmarks are int16 millimetres (posecodec version 2)
WORLD_MM = 0.0005 + 1e-6

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "state" / "climbd.sqlite3")
    yield database
    await database.close()


async def new_session(db: Database, **kw: object) -> SessionRecord:
    args: dict[str, object] = {"width": 404, "height": 720, "fps": 30.0,
                               "video_path": "sessions/x/video.mp4"}
    args.update(kw)
    return await db.create_session(**args)  # type: ignore[arg-type]


async def append(db: Database, session_id: int, s: PoseSeries, frame_count: int,
                 duration_s: float) -> None:
    await db.append_poses(session_id, s.frames, s.times, s.image, s.world,
                          frame_count=frame_count, duration_s=duration_s)


def outside(path: Path) -> sqlite3.Connection:
    """A second, independent connection (what another process would see)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


# -- opening and schema ----------------------------------------------------------------------
async def test_open_sets_wal_foreign_keys_and_schema_version(db: Database) -> None:
    assert db.path.exists()
    with contextlib.closing(outside(db.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "pose_chunks"} <= tables
    assert await db.integrity_check() == "ok"
    # PRAGMAs are per connection: check the ones of the daemon's own connection
    async with db.read("test: pragmas") as conn:
        async with conn.execute("PRAGMA foreign_keys") as cur:
            assert (await cur.fetchone())[0] == 1
        async with conn.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == 1  # NORMAL


async def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = await Database.open(path)
    rec = await new_session(db, name="kept")
    await db.close()
    await db.close()  # idempotent
    async with await Database.open(path) as db2:
        assert (await db2.get_session(rec.id)).name == "kept"


async def test_newer_schema_and_garbage_files_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    with contextlib.closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StorageError, match="newer"):
        await Database.open(newer)

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=r"garbage\.sqlite3"):
        await Database.open(garbage)


# -- sessions --------------------------------------------------------------------------------
async def test_create_get_update_finish_delete(db: Database) -> None:
    before = time.time()
    rec = await new_session(db, name="", climber="ana", source="file:x.mp4", pre_roll_s=2.5)
    assert rec.status == "recording"
    assert rec.name.startswith("Session ") and len(rec.name) == len("Session 2026-11-22 14:03")
    assert before <= rec.created_at <= time.time()
    assert (rec.width, rec.height, rec.fps, rec.pre_roll_s) == (404, 720, 30.0, 2.5)
    assert (rec.frame_count, rec.frames_with_pose, rec.duration_s, rec.error) == (0, 0, 0.0, None)
    assert await db.get_session(rec.id) == rec

    upd = await db.update_session(rec.id, name="  Crimp project  ", description="2nd try")
    assert (upd.name, upd.description, upd.climber) == ("Crimp project", "2nd try", "ana")
    assert upd.updated_at >= rec.updated_at
    assert await db.update_session(rec.id) == upd
    with pytest.raises(ValueError):
        await db.update_session(rec.id, name="   ")

    done = await db.finish_session(rec.id, status="completed", frame_count=90, duration_s=3.0,
                                   video_path="sessions/1/video.mp4")
    assert (done.status, done.frame_count, done.duration_s, done.video_path) == (
        "completed", 90, 3.0, "sessions/1/video.mp4")
    assert done.to_dict()["status"] == "completed"
    with pytest.raises(ValueError):
        await db.finish_session(rec.id, status="bogus")  # type: ignore[arg-type]

    s = make_series(10)
    await append(db, rec.id, s, 90, 3.0)
    deleted = await db.delete_session(rec.id)
    assert deleted.id == rec.id and deleted.name == "Crimp project"
    with pytest.raises(SessionNotFound):
        await db.get_session(rec.id)
    with contextlib.closing(outside(db.path)) as conn:  # chunks went by cascade
        assert conn.execute("SELECT COUNT(*) FROM pose_chunks").fetchone()[0] == 0


async def test_missing_session_raises_session_not_found(db: Database) -> None:
    s = make_series(2)
    for call in (
        db.get_session(42),
        db.update_session(42, name="x"),
        db.finish_session(42, status="failed"),
        db.delete_session(42),
        db.poses(42),
        db.append_poses(42, s.frames, s.times, s.image, s.world, frame_count=1, duration_s=1),
    ):
        with pytest.raises(SessionNotFound):
            await call


async def test_ids_are_never_reused(db: Database) -> None:
    a = await new_session(db)
    b = await new_session(db)
    await db.delete_session(b.id)
    c = await new_session(db)
    assert a.id < b.id < c.id


async def test_list_sessions_pages_newest_first(db: Database) -> None:
    ids = [(await new_session(db, name=f"s{i}")).id for i in range(7)]
    page1, total = await db.list_sessions(limit=3)
    page2, _ = await db.list_sessions(limit=3, offset=3)
    page3, _ = await db.list_sessions(limit=3, offset=6)
    assert total == 7
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    assert (await db.list_sessions(limit=3, offset=7)) == ([], 7)
    with pytest.raises(ValueError):
        await db.list_sessions(limit=-1)


# -- poses -----------------------------------------------------------------------------------
async def test_append_poses_commits_chunk_and_counters_in_one_transaction(db: Database) -> None:
    rec = await new_session(db)
    s = make_series(28, t0=0.0)
    await append(db, rec.id, s, frame_count=30, duration_s=1.0)

    # another connection sees the commit: it is on disk, not only in our connection
    with contextlib.closing(outside(db.path)) as conn:
        row = conn.execute("SELECT frame_count, frames_with_pose, duration_s FROM sessions "
                           "WHERE id = ?", (rec.id,)).fetchone()
        assert tuple(row) == (30, 28, 1.0)
        chunks = conn.execute("SELECT t_start, t_end, n, blob FROM pose_chunks "
                              "WHERE session_id = ?", (rec.id,)).fetchall()
    assert len(chunks) == 1
    t_start, t_end, n, blob = chunks[0]
    assert (t_start, t_end, n) == (s.times[0], s.times[-1], 28)
    np.testing.assert_allclose(decode_chunk(blob).world, s.world, atol=WORLD_MM)

    # an empty commit updates the counters without a chunk row
    empty = PoseSeries.empty()
    await append(db, rec.id, empty, frame_count=60, duration_s=2.0)
    got = await db.get_session(rec.id)
    assert (got.frame_count, got.frames_with_pose, got.duration_s) == (60, 28, 2.0)
    with contextlib.closing(outside(db.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pose_chunks").fetchone()[0] == 1


async def test_bad_arrays_are_rejected_before_touching_the_database(db: Database) -> None:
    rec = await new_session(db)
    s = make_series(3)
    with pytest.raises(ValueError):
        await db.append_poses(rec.id, s.frames, s.times, s.image[:, :, :3], s.world,
                              frame_count=3, duration_s=0.1)
    assert (await db.get_session(rec.id)).frame_count == 0


async def test_poses_reads_only_overlapping_chunks_and_slices_exactly(db: Database) -> None:
    rec = await new_session(db)
    other = await new_session(db)
    parts = [make_series(30, t0=float(i), frame0=30 * i, seed=i) for i in range(10)]
    for i, part in enumerate(parts):
        await append(db, rec.id, part, frame_count=30 * (i + 1), duration_s=i + 1.0)
        await append(db, other.id, make_series(5, t0=float(i), seed=99), 5, 1.0)
    whole = PoseSeries.concat(parts)

    everything = await db.poses(rec.id)
    assert len(everything) == 300
    np.testing.assert_array_equal(everything.frames, np.arange(300))
    np.testing.assert_allclose(everything.world, whole.world, atol=WORLD_MM)

    window = await db.poses(rec.id, 2.5, 4.2)
    expected = whole.slice_time(2.5, 4.2)
    assert len(window) == len(expected) == 51
    np.testing.assert_array_equal(window.frames, expected.frames)
    np.testing.assert_allclose(window.image[:, :, :3], expected.image[:, :, :3], atol=2.5e-4)
    assert window.times[0] >= 2.5 and window.times[-1] < 4.2

    assert len(await db.poses(rec.id, 9.9)) == 3  # open end
    assert len(await db.poses(rec.id, None, 0.5)) == 15  # open start
    assert len(await db.poses(rec.id, 50.0, 60.0)) == 0

    # the range query uses the (session_id, t_start) index
    with contextlib.closing(outside(db.path)) as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT blob FROM pose_chunks WHERE session_id = ? "
            "AND t_start < ? AND t_end >= ? ORDER BY t_start, id", (rec.id, 4.2, 2.5)))
    assert "pose_chunks_session_time" in plan


async def test_corrupt_chunk_is_reported_as_storage_error(db: Database) -> None:
    rec = await new_session(db)
    await append(db, rec.id, make_series(5), 5, 0.2)
    with contextlib.closing(outside(db.path)) as conn:
        conn.execute("UPDATE pose_chunks SET blob = substr(blob, 1, 100)")
        conn.commit()
    with pytest.raises(StorageError, match=f"session {rec.id}"):
        await db.poses(rec.id)


# -- crash recovery ----------------------------------------------------------------------------
async def test_recover_interrupted_marks_recording_sessions(db: Database) -> None:
    done = await new_session(db)
    await db.finish_session(done.id, status="completed")
    crashed = [await new_session(db), await new_session(db)]
    await append(db, crashed[0].id, make_series(30), 31, 1.03)

    recovered = await db.recover_interrupted()
    assert [r.id for r in recovered] == [c.id for c in crashed]
    assert all(r.status == "interrupted" for r in recovered)
    assert recovered[0].frame_count == 31 and recovered[0].frames_with_pose == 30
    assert (await db.get_session(done.id)).status == "completed"
    assert await db.recover_interrupted() == []


async def test_commits_survive_a_killed_process(tmp_path: Path) -> None:
    """A process that commits and is then killed with SIGKILL leaves its rows readable."""
    path = tmp_path / "killed.sqlite3"
    script = f"""
import asyncio, os, signal
from climbd.storage import Database
from tests.test_storage_posecodec import make_series

async def main():
    db = await Database.open({str(path)!r})
    rec = await db.create_session(width=404, height=720, fps=30.0, video_path='')
    s = make_series(30)
    await db.append_poses(rec.id, s.frames, s.times, s.image, s.world,
                          frame_count=30, duration_s=1.0)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -9, stderr.decode()
    async with await Database.open(path) as db:
        assert await db.integrity_check() == "ok"
        [rec] = await db.recover_interrupted()
        assert (rec.status, rec.frame_count, rec.frames_with_pose) == ("interrupted", 30, 30)
        np.testing.assert_allclose((await db.poses(rec.id)).world, make_series(30).world,
                                   atol=WORLD_MM)


# -- errors ----------------------------------------------------------------------------------
async def test_closed_database_raises_storage_error(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "x.sqlite3")
    await db.close()
    with pytest.raises(StorageError):
        await db.list_sessions()




def fill_disk(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full; returns its path."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


async def test_full_disk_raises_disk_full_and_keeps_committed_rows(small_disk: Path) -> None:
    path = small_disk / "climbd.sqlite3"
    db = await Database.open(path)
    try:
        rec = await new_session(db, name="before the disk filled")
        first = make_series(30)
        await append(db, rec.id, first, 30, 1.0)
        ballast = fill_disk(small_disk)

        big = make_series(200, t0=1.0, frame0=30, seed=5)  # ~190 KB: cannot fit
        with pytest.raises(DiskFullError):
            await append(db, rec.id, big, 230, 7.6)

        # the failed transaction left nothing behind; what was committed is intact
        got = await db.get_session(rec.id)
        assert (got.frame_count, got.frames_with_pose, got.duration_s) == (30, 30, 1.0)
        np.testing.assert_allclose((await db.poses(rec.id)).world, first.world, atol=WORLD_MM)
        with contextlib.closing(outside(path)) as conn:
            row = conn.execute("SELECT name, frames_with_pose FROM sessions").fetchone()
            assert tuple(row) == ("before the disk filled", 30)

        # once space is back, the same connection works again
        ballast.unlink()
        await append(db, rec.id, big.slice_time(None, 2.0), 60, 2.0)
        assert len(await db.poses(rec.id)) == 60
        assert await db.integrity_check() == "ok"
    finally:
        await db.close()


# -- pose backfill state (climbd.storage.backfill) -------------------------------------------
async def test_backfill_state_stages_chunks_and_swaps_them_in(db: Database) -> None:
    from climbd.storage.backfill import BackfillStore

    store = BackfillStore(db)
    rec = await new_session(db)
    assert rec.pose_status == "live" and rec.frames_analyzed == 0
    live = make_series(10)                      # live pose: 10 of 30 frames analysed
    await db.append_poses(rec.id, live.frames * 3, live.times * 3, live.image, live.world,
                          frame_count=30, duration_s=1.0, analyzed=10)
    assert await store.pending() == []           # still recording: not the backfill's
    await db.finish_session(rec.id, status="completed", video_path="sessions/1/video.mp4")
    assert await store.pending() == [rec.id]
    began = await store.begin(rec.id)
    assert (began.pose_status, began.frames_analyzed, began.frames_with_pose) == \
        ("backfilling", 10, 10)
    fill = make_series(30)
    await store.add_chunk(rec.id, 15, fill.slice_time(None, 0.5).encode(), 0.0, 0.5 - 1 / 30,
                          15)
    assert await store.next_frame(rec.id) == 15
    assert len(await db.poses(rec.id)) == 10     # readers see the live rows meanwhile
    assert (await store.begin(rec.id)).pose_status == "backfilling"   # resume point kept
    assert await store.next_frame(rec.id) == 15
    rest = fill.slice_time(0.5, None)
    found = rest.frames != 18                  # the fill lost the climber in frame 18 only
    rest = PoseSeries(rest.frames[found], rest.times[found], rest.image[found],
                      rest.world[found])
    await store.add_chunk(rec.id, 30, rest.encode(), 0.5, 29 / 30, 14)
    done = await store.complete(rec.id, 30)
    assert (done.pose_status, done.frames_analyzed, done.frames_with_pose) == \
        ("complete", 30, 30)
    stored = await db.poses(rec.id)
    np.testing.assert_array_equal(stored.frames, np.arange(30))
    # the fill's poses everywhere it found the climber, the live pose in frame 18
    np.testing.assert_allclose(stored.world[17], fill.world[17], atol=WORLD_MM)
    np.testing.assert_allclose(stored.world[18], live.world[6], atol=WORLD_MM)
    np.testing.assert_allclose(stored.world[21], fill.world[21], atol=WORLD_MM)
    assert np.all(np.diff(stored.times) > 0)
    assert await store.pending() == [] and await store.progress(rec.id) is None


async def test_backfill_state_completes_at_once_when_nothing_was_skipped(db: Database) -> None:
    from climbd.storage.backfill import BackfillStore

    store = BackfillStore(db)
    rec = await new_session(db)
    await append(db, rec.id, make_series(30), frame_count=30, duration_s=1.0)
    await db.finish_session(rec.id, status="completed", video_path="sessions/1/video.mp4")
    assert (await store.begin(rec.id)).pose_status == "complete"
    failed = await new_session(db)              # a failed session without video
    await db.finish_session(failed.id, status="failed", error="disk")
    assert (await store.begin(failed.id)).pose_status == "complete"
    other = await new_session(db)
    await db.finish_session(other.id, status="interrupted", frame_count=30,
                            video_path="sessions/3/video.mp4")
    assert (await store.begin(other.id)).pose_status == "backfilling"
    await db.delete_session(other.id)           # deleted during the fill
    with pytest.raises(SessionNotFound):
        await store.add_chunk(other.id, 10, None)
