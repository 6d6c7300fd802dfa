"""Retention on a small tmpfs: old sessions go first, pinned ones stay, a recording is
refused below the floor (HTTP 507 and health), and the catalog stays consistent.

Sessions are real videos (clips from ../shared/media remuxed into ``sessions/<id>/``);
free space is real free space of the tmpfs (a filler file plays the rest of the disk).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from climbd.config import RetentionConfig
from climbd.retention import MiB, Retention
from climbd.storage import Database
from climbd.storage.exports import ExportStore
from climbd.visibility import SYSTEM, viewing
from tests.conftest import SHORT, STEEPWALL
from tests.export_support import (
    add_video_session,
    daemon_config,
    start_daemon,
    tmpfs,
    wait_frames,
)


@pytest.fixture(autouse=True)
def _as_system() -> Iterator[None]:
    """These tests use the catalog directly, as the appliance does: outside a request
    nothing is visible (climbd.visibility fails closed) unless the system viewer is set."""
    with viewing(SYSTEM):
        yield


pytestmark = pytest.mark.integration

DAY = 86400.0


def _fill(path: Path, free_target: int) -> None:
    """Grow the filler file ``path`` until the filesystem has about ``free_target`` bytes
    free."""
    free = shutil.disk_usage(path.parent).free
    size = path.stat().st_size if path.exists() else 0
    new = max(0, size + free - free_target)
    with open(path, "ab") as f:
        f.truncate(new)
        if new > size:
            os.posix_fallocate(f.fileno(), size, new - size)


async def _consistent(db: Database, state: Path) -> None:
    """The catalog is sound and agrees with the files on disk."""
    assert await db.integrity_check() == "ok"
    async with db.read("test: fk check") as conn, \
            conn.execute("PRAGMA foreign_key_check") as cur:
        assert await cur.fetchall() == []
    sessions, _ = await db.list_sessions(limit=1000)
    ids = {s.id for s in sessions}
    for s in sessions:
        assert (state / s.video_path).is_file(), s
    on_disk = {int(p.name) for p in (state / "sessions").iterdir()}
    assert on_disk == ids


async def _deleter(db: Database, state: Path) -> Callable[[int], Awaitable[None]]:
    async def delete(session_id: int) -> None:
        await db.delete_session(session_id)
        shutil.rmtree(state / "sessions" / str(session_id), ignore_errors=True)

    return delete


async def test_free_space_deletes_oldest_unpinned_first(tmp_path: Path, media: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    with tmpfs(tmp_path / "disk", "32m") as state:
        db = await Database.open(state / "climbd.db")
        try:
            now = time.time()
            recs = [await add_video_session(db, state, STEEPWALL, name=f"s{i}",
                                            created_at=now - (10 - i) * 3600)
                    for i in range(6)]
            await db.update_session(recs[1].id, pinned=True)  # the second oldest
            size = (state / recs[0].video_path).stat().st_size
            _fill(state / "filler.bin", 1 * MiB)
            free0 = shutil.disk_usage(state).free
            # headroom = free now + 2.5 sessions: three unpinned sessions must go
            headroom = free0 + int(2.5 * size)
            cfg = RetentionConfig(max_age_days=0, headroom_s=headroom * 8 / 1000 / 1.0,
                                  floor_mb=0.5, interval_s=60)
            retention = Retention(db, state, cfg, bitrate_kbps=1.0,
                                  delete=await _deleter(db, state))
            assert abs(retention.headroom_bytes - headroom) <= 1
            assert retention.status()["state"] == "low"
            with caplog.at_level(logging.WARNING, "climbd.retention"):
                deleted = await retention.sweep()
            assert [d.session_id for d in deleted] == [recs[0].id, recs[2].id, recs[3].id]
            assert all(d.reason == "free space" for d in deleted)
            assert shutil.disk_usage(state).free >= retention.headroom_bytes
            # minimal: without the last deletion the headroom was not reached
            assert shutil.disk_usage(state).free - size < retention.headroom_bytes
            left = [s.id for s in (await db.list_sessions(limit=100))[0]]
            assert sorted(left) == [recs[1].id, recs[4].id, recs[5].id]
            assert (await db.get_session(recs[1].id)).pinned
            logged = [r.getMessage() for r in caplog.records]
            assert sum("retention: deleted session" in m and "free space" in m
                       for m in logged) == 3
            assert retention.status()["state"] == "ok"
            assert [d["session_id"] for d in retention.status()["recent_deletions"]] == \
                [recs[0].id, recs[2].id, recs[3].id]
            await _consistent(db, state)

            # nothing but pinned sessions left to delete: they stay, health says so
            for r in (recs[4], recs[5]):
                await db.update_session(r.id, pinned=True)
            _fill(state / "filler.bin", 2 * MiB)
            retention.config = RetentionConfig(max_age_days=0, headroom_s=cfg.headroom_s,
                                               floor_mb=0.5)
            assert await retention.sweep() == []
            status = retention.status()
            assert status["state"] == "low" and "pinned" in status["message"]
            assert len((await db.list_sessions())[0]) == 3
            await _consistent(db, state)
        finally:
            await db.close()


async def test_age_rule_keeps_pinned_and_busy_sessions(tmp_path: Path, media: Path) -> None:
    with tmpfs(tmp_path / "disk", "16m") as state:
        db = await Database.open(state / "climbd.db")
        try:
            now = time.time()
            old = await add_video_session(db, state, SHORT, created_at=now - 40 * DAY)
            old_pinned = await add_video_session(db, state, SHORT, created_at=now - 50 * DAY,
                                                 pinned=True)
            old_exporting = await add_video_session(db, state, SHORT,
                                                    created_at=now - 45 * DAY)
            store = ExportStore(db)
            running = await store.create(old_exporting.id, "overlay", start_s=None,
                                         end_s=None)
            await store.update(running.id, status="running")
            young = await add_video_session(db, state, SHORT, created_at=now - 5 * DAY)
            # an orphaned export directory (its row went with a deleted session)
            (state / "exports" / "999").mkdir(parents=True)
            (state / "exports" / "999" / "clip.mp4").write_bytes(b"x" * 100)
            (state / "exports" / str(running.id)).mkdir()
            cfg = RetentionConfig(max_age_days=30, headroom_s=0, floor_mb=0)
            retention = Retention(db, state, cfg, 2500, delete=await _deleter(db, state))
            deleted = await retention.sweep(now)
            assert [(d.session_id, d.reason) for d in deleted] == [(old.id, "age")]
            assert "40.0 days old" in deleted[0].detail
            left = {s.id for s in (await db.list_sessions())[0]}
            assert left == {old_pinned.id, old_exporting.id, young.id}
            assert not (state / "exports" / "999").exists()
            assert (state / "exports" / str(running.id)).exists()
            # once the export finished, the old session goes too (and its export rows)
            await store.update(running.id, status="done")
            deleted = await retention.sweep(now)
            assert [d.session_id for d in deleted] == [old_exporting.id]
            assert await store.ids() == set()
            assert (await retention.sweep(now + 26 * DAY))[0].session_id == young.id
            await _consistent(db, state)
        finally:
            await db.close()


async def test_recording_is_refused_below_the_floor(tmp_path: Path, media: Path) -> None:
    with tmpfs(tmp_path / "disk", "48m") as state:
        config = daemon_config(retention={"floor_mb": 12, "headroom_s": 0,
                                          "max_age_days": 0, "interval_s": 0.2})
        async with start_daemon(state, config) as (c, daemon):
            await wait_frames(daemon, 10)
            assert (await c.req("GET", "/api/health"))[1]["retention"]["state"] == "ok"
            _fill(state / "filler.bin", 8 * MiB)  # below the 12 MiB floor
            status, body = await c.req("POST", "/api/recordings/start", json={})
            assert status == 507, body
            assert body["error"] == "InsufficientStorage"
            assert "not enough free space to record" in body["message"]
            assert "12.0 MiB needed" in body["message"]
            status, body = await c.req("POST", "/api/recordings/save-last", json={"seconds": 1})
            assert status == 507
            full = (await c.req("GET", "/api/health"))[1]
            assert full["status"] == "degraded"
            assert "disk below the recording floor" in full["problems"]
            health = full["retention"]
            assert health["state"] == "critical" and health["can_record"] is False
            assert health["floor_bytes"] == 12 * MiB and health["free_bytes"] < 12 * MiB
            assert daemon.recorder.status()["state"] == "idle"
            # room again: recording works
            (state / "filler.bin").unlink()
            status, s = await c.req("POST", "/api/recordings/start", json={"pre_roll_s": 0})
            assert status == 201, s
            status, s = await c.req("POST", "/api/recordings/stop")
            assert status == 200 and s["status"] == "completed"
            assert (await c.req("GET", "/api/health"))[1]["retention"]["state"] == "ok"
            await _consistent(daemon.db, state)


async def test_daemon_sweeps_in_the_background(tmp_path: Path, media: Path) -> None:
    with tmpfs(tmp_path / "disk", "32m") as state:
        db = await Database.open(state / "climbd.db")
        now = time.time()
        old = await add_video_session(db, state, STEEPWALL, created_at=now - 3 * 3600)
        pinned = await add_video_session(db, state, STEEPWALL, created_at=now - 4 * 3600,
                                         pinned=True)
        new = await add_video_session(db, state, STEEPWALL, created_at=now - 3600)
        await db.close()
        size = (state / old.video_path).stat().st_size
        _fill(state / "filler.bin", 6 * MiB)
        # headroom: 6 MiB free now + half a session: deleting the oldest one is enough
        headroom = 6 * MiB + int(0.5 * size)
        config = daemon_config(
            video={"bitrate_kbps": 8}, storage={"reserve_mb": 0},
            retention={"floor_mb": 1, "headroom_s": headroom / 1000, "max_age_days": 0,
                       "interval_s": 0.2})
        async with start_daemon(state, config) as (c, daemon):
            for _ in range(100):
                status, _ = await c.req("GET", f"/api/sessions/{old.id}")
                if status == 404:
                    break
                await c.req("GET", "/api/health")
                await asyncio.sleep(0.1)
            assert status == 404, "the oldest unpinned session should have been deleted"
            assert (await c.req("GET", f"/api/sessions/{pinned.id}"))[0] == 200
            assert (await c.req("GET", f"/api/sessions/{new.id}"))[0] == 200
            health = (await c.req("GET", "/api/health"))[1]["retention"]
            assert health["deleted_total"] == 1
            assert health["recent_deletions"][0]["session_id"] == old.id
            await _consistent(daemon.db, state)
