"""Attempts over HTTP against the real in-process daemon: session JSON, the attempts route,
recompute after pose is filled in, CSV/JSON exports with metrics, migrations, and the live
detector's events on the pose broadcast.

Poses are synthetic with hand-known answers (tests/attempts_support.py), written into the
real SQLite catalog beside a real video; pose inference is off (covered by the media tests).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from climbd.attempt_service import DETECTOR_VERSION, LiveAttemptEvent
from climbd.pose import Pose
from climbd.storage import MIGRATIONS, Database
from climbd.storage.attempts import AttemptStore
from climbd.visibility import SYSTEM, viewing
from tests.attempts_support import Scene, template
from tests.conftest import SHORT
from tests.export_support import add_video_session, start_daemon

pytestmark = pytest.mark.integration

STAND = template()
CLIMB = template(arms_up=True, right_foot_up_m=0.3)


@pytest.fixture(autouse=True)
def _as_system() -> Iterator[None]:
    """These tests also read the catalog directly, as the appliance does: outside a request
    nothing is visible (climbd.visibility fails closed) unless the system viewer is set.
    Requests still see only what their caller may (the daemon serves them from nobody)."""
    with viewing(SYSTEM):
        yield


def scene() -> Scene:
    """Stand 2 s, lift off at 2.0 s, up 1.0 m, down, land at 9.0 s, stand 2 s (30 fps)."""
    s = Scene(fps=30.0, width=404, height=720, ppm=250.0, floor_px=690.0)
    s.hold(2.0, STAND, 200).move(0.2, CLIMB, 200, 200, 0.0, 0.4)
    s.move(3.3, CLIMB, 200, 200, 0.4, 1.4).move(3.3, CLIMB, 200, 200, 1.4, 0.3)
    s.move(0.2, CLIMB, 200, 200, 0.3, 0.0).hold(2.0, STAND, 200)
    return s


async def add_poses(db: Database, sid: int, s: Scene, lo: float = 0.0,
                    hi: float = np.inf) -> int:
    t, im, w = s.arrays()
    keep = (t >= lo) & (t < hi)
    frames = np.round(t[keep] * s.fps).astype(np.int32)
    await db.append_poses(sid, frames, t[keep], im[keep], w[keep],
                          frame_count=len(s.times), duration_s=s.t)
    return int(keep.sum())


async def test_attempts_in_session_json_route_and_exports(tmp_path: Path, media: Path) -> None:
    state = tmp_path / "state"
    async with start_daemon(state) as (c, daemon):
        rec = await add_video_session(daemon.db, state, SHORT, name="synthetic")
        s = scene()
        await add_poses(daemon.db, rec.id, s, hi=5.0)     # pose filled in partly ...
        status, body = await c.req("GET", f"/api/sessions/{rec.id}/attempts")
        assert status == 200, body
        (first,) = body["attempts"]
        # no pose after 5 s of an 11 s session: the attempt ends where he was last seen
        assert first["end_reason"] == "lost" and first["end_s"] == pytest.approx(5.0, abs=0.05)
        await add_poses(daemon.db, rec.id, s, lo=5.0)     # ... then completely
        status, body = await c.req("GET", f"/api/sessions/{rec.id}/attempts")
        (a,) = body["attempts"]
        assert a["start_s"] == pytest.approx(2.0, abs=0.15)
        assert a["end_s"] == pytest.approx(9.0, abs=0.15)
        assert a["duration_s"] == pytest.approx(7.0, abs=0.3)
        m = a["metrics"]
        assert m["height_gained_m"] == pytest.approx(1.0, abs=0.06)
        assert set(m["angles"]) >= {"t", "left_elbow", "right_knee", "left_hip"}
        analysis = await AttemptStore(daemon.db).analysis(rec.id)
        assert analysis is not None and analysis["version"] == DETECTOR_VERSION

        status, detail = await c.req("GET", f"/api/sessions/{rec.id}")
        assert status == 200 and detail["attempts"][0]["metrics"]["angles"]["t"]
        status, listing = await c.req("GET", "/api/sessions")
        item = next(i for i in listing["items"] if i["id"] == rec.id)
        (brief,) = item["attempts"]
        assert brief["start_s"] == a["start_s"] and "angles" not in brief["metrics"]
        assert brief["metrics"]["height_gained_m"] == m["height_gained_m"]

        status, again = await c.req("POST", f"/api/sessions/{rec.id}/attempts/recompute")
        assert status == 200 and again["attempts"][0]["start_s"] == a["start_s"]
        assert (await c.req("GET", "/api/sessions/999/attempts"))[0] == 404
        assert (await c.req("GET", "/api/sessions/abc/attempts"))[0] == 404

        files: dict[str, bytes] = {}
        for kind in ("json", "csv"):
            status, e = await c.req("POST", f"/api/sessions/{rec.id}/exports",
                                    json={"kind": kind})
            assert status == 202, e
            done = await c.wait_export(e["id"])
            assert done["status"] == "done", done
            status, files[kind] = await c.req("GET", done["file_url"], raw=True)
        doc = json.loads(files["json"])
        assert doc["attempts"][0]["metrics"]["height_gained_m"] == m["height_gained_m"]
        rows = list(csv.DictReader(files["csv"].decode().splitlines()))
        inside = [r for r in rows if r["attempt"] == "0"]
        outside = [r for r in rows if r["attempt"] == ""]
        assert inside and outside
        assert float(inside[0]["attempt_height_gained_m"]) == m["height_gained_m"]
        assert all(float(r["t_s"]) < a["start_s"] or float(r["t_s"]) > a["end_s"]
                   for r in outside)

        status, live = await c.req("GET", "/api/attempts/live")
        assert status == 200 and live["auto_record"] is False
        assert daemon.health()["attempts"]["state"] in ("unknown", "ground", "wall")


async def test_live_detector_publishes_events_from_the_pose_broadcast(
        tmp_path: Path, media: Path) -> None:
    async with start_daemon(tmp_path / "state") as (_, daemon):
        assert daemon.attempts is not None
        seen: list[LiveAttemptEvent] = []
        unsubscribe = daemon.attempts.events.subscribe(seen.append)
        s = scene()
        t0 = 1000.0
        for i, (t, im) in enumerate(zip(s.times, s.image, strict=True)):
            daemon.attempts.feed(Pose(i, t0 + t, s.width, s.height, im, None))
        unsubscribe()
        assert [e.kind for e in seen] == ["start", "end"]
        assert seen[0].t - t0 == pytest.approx(2.0, abs=0.15)
        assert seen[1].t - t0 == pytest.approx(9.0, abs=0.15)
        assert seen[1].end_reason == "landed" and seen[0].number == seen[1].number
        assert daemon.attempts.status()["last"]["kind"] == "end"


async def _scalar(db: Database, sql: str) -> Any:
    async with db.read("test") as conn, conn.execute(sql) as cur:
        row = await cur.fetchone()
    return row[0]


async def test_attempt_tables_are_a_migration(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.db")
    try:
        assert await _scalar(db, "PRAGMA user_version") == len(MIGRATIONS)
        rec = await db.create_session(width=640, height=480, fps=30)
        store = AttemptStore(db)
        assert await store.analysis(rec.id) is None
        await store.replace(rec.id, [{"start_s": 1.0, "end_s": None, "metrics": {"x": 1}}],
                            frames_with_pose=0, version=1)
        got: list[dict[str, Any]] = await store.for_session(rec.id)
        assert got == [{"index": 0, "start_s": 1.0, "end_s": None, "duration_s": None,
                        "end_reason": None, "metrics": {"x": 1}}]
        await db.delete_session(rec.id)  # cascades
        assert await _scalar(db, "SELECT COUNT(*) FROM attempts") == 0
    finally:
        await db.close()
