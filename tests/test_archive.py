"""Archive to S3-compatible storage against a real S3 server on 127.0.0.1 (moto_server, a
separate process): recorded and ingested sessions byte-identical in the bucket, an outage
and a kill -9 mid-upload resumed, a 200 MB video in parts with bounded memory, the session
UUID migration, and retention with the archive enabled."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from climbd.config import ArchiveConfig, RetentionConfig
from climbd.retention import Retention
from climbd.storage import MIGRATIONS, Database
from climbd.storage.outbox import Outbox
from climbd.visibility import SYSTEM, viewing
from tests.conftest import REPO, SHORT, async_wait_until
from tests.export_support import add_video_session, copy_template, set_created_at
from tests.s3_support import BUCKET, S3Server, sha256_file
from tests.securitykit import admin_headers, secure_daemon, wait_frames

pytestmark = pytest.mark.system   # a real S3 server process, its outages


async def get(db: Database, session_id: int) -> Any:
    with viewing(SYSTEM):
        return await db.get_session(session_id)


def check_objects(s3: S3Server, state_dir: Path, rec: Any) -> dict[str, Any]:
    """Every object of ``rec`` is in the bucket; the video byte-identical. Returns
    session.json."""
    base = f"wall1/{rec.uuid}/"
    assert set(s3.keys()) >= {base + n for n in
                              ("video.mp4", "poses.csv", "poses.json", "session.json")}
    assert s3.sha256(base + "video.mp4") == sha256_file(state_dir / rec.video_path)
    doc = json.loads(s3.get(base + "session.json"))
    assert doc["session"]["uuid"] == rec.uuid and doc["session"]["id"] == rec.id
    assert doc["archived_at"] == pytest.approx(rec.archived_at)
    rows = list(csv.DictReader(io.StringIO(s3.get(base + "poses.csv").decode())))
    assert len(rows) == rec.frames_with_pose * 33
    poses = json.loads(s3.get(base + "poses.json"))
    assert poses["format"] == "climbd-poses" and len(poses["frames"]) == rec.frames_with_pose
    return doc


async def test_recorded_and_ingested_sessions_are_archived_byte_identical(
        tmp_path: Path) -> None:
    s3 = S3Server(tmp_path / "s3")
    state = copy_template(tmp_path / "state")  # session 1: SHORT ingested with pose
    try:
        async with secure_daemon(tmp_path, sections=s3.section()) as (daemon, base):
            await wait_frames(daemon, 40)
            rec = await daemon.recorder.start(name="recorded")
            await async_wait_until(lambda: daemon.recorder.status()["frames"] >= 45, 20)
            rec = await daemon.recorder.stop()
            assert rec.status == "completed" and rec.uuid
            for sid in (1, rec.id):
                await async_wait_until(
                    lambda sid=sid: get(daemon.db, sid), 60)
                async def archived(sid: int = sid) -> bool:
                    return (await get(daemon.db, sid)).archived_at is not None
                await async_wait_until(archived, 90, 0.1,
                                       lambda: str(daemon.health()["archive"]))
            ingested, recorded = await get(daemon.db, 1), await get(daemon.db, rec.id)
            assert ingested.frames_with_pose > 0 and ingested.uuid != recorded.uuid
            check_objects(s3, state, ingested)
            doc = check_objects(s3, state, recorded)
            assert doc["session"]["name"] == "recorded"
            health = daemon.health()["archive"]
            assert health["archived"] == 2 and health["pending"] == 0
            assert health["state"] == "idle" and "nice 10" in health["priority"]
            # the session JSON of the API says when it was archived
            import aiohttp
            async with aiohttp.ClientSession(headers=await admin_headers(daemon)) as c, \
                    c.get(f"{base}/api/sessions/{rec.id}") as r:
                body = await r.json()
            assert body["archived_at"] == pytest.approx(recorded.archived_at)
            assert body["uuid"] == recorded.uuid
    finally:
        s3.stop()


def _random_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))


def _big_session(state: Path, size_mb: int) -> tuple[int, str]:
    """A completed session whose video.mp4 is ``size_mb`` MiB of random bytes (the archive
    copies bytes; it never decodes); returns (id, sha256)."""
    async def make() -> int:
        db = await Database.open(state / "climbd.db")
        try:
            rec = await db.create_session(name="big", width=640, height=480, fps=30)
            d = state / "sessions" / str(rec.id)
            d.mkdir(parents=True)
            await asyncio.to_thread(_random_file, d / "video.mp4", size_mb)
            await db.finish_session(rec.id, status="completed", frame_count=1,
                                    duration_s=1.0, video_path=f"sessions/{rec.id}/video.mp4")
            async with db.transaction("no pose to backfill") as conn:  # as the daemon's
                await conn.execute(  # backfill leaves a session without pose
                    "UPDATE sessions SET pose_status = 'complete' WHERE id = ?", (rec.id,))
            return rec.id
        finally:
            await db.close()
    state.mkdir(parents=True, exist_ok=True)
    sid = asyncio.run(make())
    return sid, sha256_file(state / "sessions" / str(sid) / "video.mp4")


def test_upload_resumes_after_a_server_outage_and_a_kill_9(
        tmp_path: Path, daemon_factory: Any) -> None:
    s3 = S3Server(tmp_path / "s3")
    state = tmp_path / "state"
    sid, digest = _big_session(state, 150)
    conf = tmp_path / "climbd.toml"
    sec = s3.section(part_size_mb=5)["archive"]
    conf.write_text("[pose]\nenabled = false\n[retention]\nfloor_mb = 0\nheadroom_s = 0\n"
                    "[archive]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sec.items()))
    try:
        d = daemon_factory(SHORT, "--config", str(conf), state_dir=state)
        d.wait_ready(capture=False)
        # the server goes away mid-upload ...
        d.health_until(lambda h: (h["archive"].get("current") or {}).get("bytes", 0) > 0, 60)
        s3.stop()
        h = d.health_until(lambda h: h["archive"]["state"] == "failing", 60)
        assert h["archive"]["last_error"]
        s3.start()  # ... and comes back (moto keeps nothing: the bucket is made again)
        # the daemon is killed -9 mid-upload, then started again
        d.health_until(lambda h: (h["archive"].get("current") or {}).get("bytes", 0) > 0, 60)
        d.kill()
        with sqlite3.connect(state / "climbd.db") as conn:
            row = conn.execute("SELECT tries FROM archive_outbox WHERE session_id = ?",
                               (sid,)).fetchone()
        assert row is not None, "the outbox row survives the kill"
        assert row[0] >= 1, "the outage was counted"
        d.respawn()
        d.wait_ready(capture=False)
        got = d.health_until(lambda h: h["archive"].get("archived", 0) >= 1, 180)
        status, rec = d.get(f"/api/sessions/{sid}")
        assert status == 200 and rec["archived_at"] is not None
        assert s3.sha256(f"wall1/{rec['uuid']}/video.mp4") == digest
        assert got["archive"]["pending"] == 0
        head = s3.client().head_object(Bucket=BUCKET, Key=f"wall1/{rec['uuid']}/video.mp4")
        assert head["ContentLength"] == 150 << 20 and head["ETag"].endswith('-30"')
        # the upload interrupted by the kill was aborted, no parts linger
        assert not s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    finally:
        s3.stop()


def test_200_mb_video_goes_up_in_parts_with_bounded_memory(tmp_path: Path) -> None:
    s3 = S3Server(tmp_path / "s3")
    state = tmp_path / "state"
    sid, digest = _big_session(state, 200)
    try:
        section = s3.section(part_size_mb=8)["archive"]
        out = subprocess.run([sys.executable, "-m", "tests.archive_child", str(state),
                              json.dumps(section)], capture_output=True, text=True, cwd=REPO,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.splitlines()[-1])
        assert result["archived"] == 1, result
        growth_mb = (result["peak_rss_kb"] - result["rss_before_kb"]) / 1024
        print(f"uploader RSS before {result['rss_before_kb'] / 1024:.0f} MiB, peak "
              f"{result['peak_rss_kb'] / 1024:.0f} MiB (+{growth_mb:.0f} MiB for 200 MiB)")
        assert growth_mb < 64, f"peak RSS grew {growth_mb:.0f} MiB for a 200 MiB upload"
        with sqlite3.connect(state / "climbd.db") as conn:
            (u,) = conn.execute("SELECT uuid FROM sessions WHERE id = ?", (sid,)).fetchone()
        key = f"wall1/{u}/video.mp4"
        head = s3.client().head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == 200 << 20
        assert head["ETag"].endswith('-25"'), head["ETag"]  # 25 parts of 8 MiB
        assert s3.sha256(key) == digest
    finally:
        s3.stop()


async def test_sessions_get_a_uuid_and_old_rows_are_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # a catalog of schema version 5 with two sessions
        for i, sql in enumerate(MIGRATIONS[:5], start=1):
            conn.executescript(sql + f"\nPRAGMA user_version = {i};")
        for n in range(2):
            conn.execute("INSERT INTO sessions (name, created_at, updated_at, width, height, "
                         "fps, status) VALUES (?, 0, 0, 64, 48, 30, 'completed')", (f"s{n}",))
    db = await Database.open(path)
    try:
        old = [await get(db, 1), await get(db, 2)]
        new = await db.create_session(name="new", width=64, height=48, fps=30)
        uuids = [r.uuid for r in (*old, new)]
        assert len(set(uuids)) == 3
        for u in uuids:
            assert u is not None and uuid.UUID(u).version == 4
        assert all(r.archived_at is None for r in old)
    finally:
        await db.close()


async def test_retention_with_the_archive_deletes_archived_copies_first(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    db = await Database.open(state / "climbd.db")
    try:
        now = time.time()
        recs = [await add_video_session(db, state, SHORT, name=f"s{i}") for i in range(4)]
        for i, r in enumerate(recs):  # s0 oldest (40 days) .. s3 newest (1 day)
            await set_created_at(db, r.id, now - (40 - 13 * i) * 86400)
        outbox = Outbox(db)
        with viewing(SYSTEM):
            await outbox.enqueue_pending()
            await outbox.complete(recs[1].id)  # s1 (27 days) archived
            await outbox.complete(recs[3].id)  # s3 (1 day) archived
        free = {"bytes": 10 << 30}
        deleted: list[int] = []

        async def delete(sid: int) -> None:
            deleted.append(sid)
            async with db.transaction("test delete") as conn:
                await conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            free["bytes"] += 300 << 20

        cfg = RetentionConfig(max_age_days=30, headroom_s=3600, floor_mb=200)
        ret = Retention(db, state, cfg, 2500, delete, free_bytes=lambda: free["bytes"],
                        archived_ids=outbox.archived_ids,
                        delete_local_after_days=ArchiveConfig(
                            delete_local_after_days=20).delete_local_after_days)
        with viewing(SYSTEM):
            # plenty of room: the archived s1 (27 d > 20 d) goes; s0 (40 d, past max_age)
            # stays because it is not archived; s3 is too young
            assert [d.session_id for d in await ret.sweep(now)] == [recs[1].id]
            # below the headroom (1.1 GB) but above the floor: archived s3 goes, the
            # unarchived s0, s2 stay although they are older
            free["bytes"] = 500 << 20
            assert [d.session_id for d in await ret.sweep(now)] == [recs[3].id]
            assert ret.stuck
            # below the hard floor: unarchived sessions are deleted, oldest first, logged
            free["bytes"] = 100 << 20
            caplog.set_level(logging.WARNING, "climbd.retention")
            assert [d.session_id for d in await ret.sweep(now)] == [recs[0].id]
            assert any("NOT archived" in m for m in caplog.messages)
            assert deleted == [recs[1].id, recs[3].id, recs[0].id]
        # without the archive the same rules delete by age as before
        ret2 = Retention(db, state, cfg, 2500, delete, free_bytes=lambda: 10 << 40)
        with viewing(SYSTEM):
            await set_created_at(db, recs[2].id, now - 35 * 86400)
            assert [d.session_id for d in await ret2.sweep(now)] == [recs[2].id]
    finally:
        await db.close()
