"""The HTTP API against a real in-process daemon on 127.0.0.1 with a fake camera.

Pose is disabled here (the API is what is tested; pose is covered end to end elsewhere), and
the camera is the hardware-seam fake from tests/fakes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import climbd.daemon as daemon_module
from climbd.config import Config
from climbd.daemon import Daemon
from climbd.storage import Database
from climbd.visibility import SYSTEM, viewing
from tests.conftest import SHORT
from tests.fakes import CameraRig
from tests.securitykit import admin_headers

pytestmark = [pytest.mark.integration, pytest.mark.timing]  # wall-clock rates and delays


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.s, self.base = session, base

    async def req(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.s.request(method, self.base + path, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()


@pytest.fixture
async def api(tmp_path: Path, media: Path) -> AsyncIterator[tuple[Client, Daemon, CameraRig]]:
    rig = CameraRig(SHORT, fps=30)
    config = Config.model_validate({
        "pose": {"enabled": False}, "server": {"host": "127.0.0.1", "port": 0},
        "capture": {"retry_initial_s": 0.05, "retry_max_s": 0.2, "source": "/dev/video9"},
        "recording": {"pre_roll_s": 2.0},
    })
    daemon = Daemon(config, tmp_path / "state", source_factory=rig.open)
    await daemon.start()
    async with aiohttp.ClientSession(headers=await admin_headers(daemon)) as s:
        yield Client(s, f"http://127.0.0.1:{daemon.port}"), daemon, rig
    await daemon.stop()


async def _wait_frames(daemon: Daemon, n: int) -> None:
    for _ in range(200):
        if daemon.pipeline.encoder.frames >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no frames")


async def test_health_reports_every_stage(api: Any) -> None:
    c, daemon, _ = api
    await _wait_frames(daemon, 5)
    status, h = await c.req("GET", "/api/health")
    assert status == 200
    assert h["capture"]["state"] == "running" and h["video"]["frames"] >= 5
    assert h["recording"]["state"] == "idle" and h["status"] == "ok"
    assert h["storage"]["free_bytes"] > 0


async def test_record_list_patch_delete(api: Any) -> None:
    c, daemon, _ = api
    await _wait_frames(daemon, 40)
    ids = []
    for i in range(3):
        status, s = await c.req("POST", "/api/recordings/start",
                                json={"name": f"a{i}", "pre_roll_s": 0})
        assert status == 201, s
        await asyncio.sleep(0.3)
        status, s = await c.req("POST", "/api/recordings/stop")
        assert status == 200 and s["status"] == "completed" and s["frame_count"] > 0
        ids.append(s["id"])
    status, page = await c.req("GET", "/api/sessions?limit=2")
    assert status == 200 and page["total"] == 3
    assert [s["id"] for s in page["items"]] == [ids[2], ids[1]]  # newest first
    status, page2 = await c.req("GET", "/api/sessions?limit=2&offset=2")
    assert [s["id"] for s in page2["items"]] == [ids[0]]

    status, s = await c.req("PATCH", f"/api/sessions/{ids[0]}",
                            json={"name": "Crimp project", "climber": "Bo"})
    assert status == 200 and s["name"] == "Crimp project" and s["climber"] == "Bo"

    video = daemon.state_dir / "sessions" / str(ids[0])
    assert (video / "video.mp4").exists()
    status, _ = await c.req("DELETE", f"/api/sessions/{ids[0]}")
    assert status == 200
    assert not video.exists()
    assert (await c.req("GET", f"/api/sessions/{ids[0]}"))[0] == 404


async def test_video_supports_range_requests(api: Any) -> None:
    c, daemon, _ = api
    await _wait_frames(daemon, 40)
    status, s = await c.req("POST", "/api/recordings/save-last", json={"seconds": 1})
    assert status == 201, s
    status, part = await c.req("GET", s["video_url"], headers={"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and part[4:8] == b"ftyp"


@pytest.mark.parametrize(("method", "path", "kwargs", "want"), [
    ("POST", "/api/recordings/start", {"data": b"{not json"}, 400),
    ("POST", "/api/recordings/start", {"data": b"[1, 2]"}, 400),
    ("POST", "/api/recordings/start", {"json": {"pre_roll_s": -1}}, 422),
    ("POST", "/api/recordings/start", {"json": {"bogus": 1}}, 422),
    ("POST", "/api/recordings/save-last", {"json": {"seconds": "lots"}}, 422),
    ("POST", "/api/recordings/stop", {}, 409),
    ("GET", "/api/sessions/999", {}, 404),
    ("GET", "/api/sessions/abc", {}, 404),
    ("GET", "/api/sessions/999/poses", {}, 404),
    ("GET", "/api/sessions/999/video", {}, 404),
    ("PATCH", "/api/sessions/999", {"json": {"name": "x"}}, 404),
    ("DELETE", "/api/sessions/999", {}, 404),
    ("GET", "/api/sessions?limit=0", {}, 400),
    ("GET", "/api/sessions?offset=-1", {}, 400),
    ("GET", "/api/nothing-here", {}, 404),
])
async def test_bad_requests_get_clear_json_errors(api: Any, method: str, path: str,
                                                  kwargs: dict, want: int) -> None:
    c, _, _ = api
    status, body = await c.req(method, path, **kwargs)
    assert status == want, body
    assert isinstance(body, dict) and body["message"] and "Traceback" not in str(body)


async def test_double_start_is_refused(api: Any) -> None:
    c, daemon, _ = api
    await _wait_frames(daemon, 10)
    assert (await c.req("POST", "/api/recordings/start", json={}))[0] == 201
    status, body = await c.req("POST", "/api/recordings/start", json={})
    assert status == 409 and "already recording" in body["message"]
    assert (await c.req("POST", "/api/recordings/stop"))[0] == 200


async def test_poses_range_validation(api: Any) -> None:
    c, daemon, _ = api
    await _wait_frames(daemon, 40)
    _, s = await c.req("POST", "/api/recordings/save-last", json={"seconds": 1})
    for q in ("start=abc", "start=2&end=1", "start=nan"):
        status, body = await c.req("GET", f"/api/sessions/{s['id']}/poses?{q}")
        assert status == 400, (q, body)
    status, body = await c.req("GET", f"/api/sessions/{s['id']}/poses?start=100&end=200")
    assert status == 200 and body["t"] == []


async def test_camera_that_disappears_keeps_the_daemon_serving(api: Any) -> None:
    c, daemon, rig = api
    await _wait_frames(daemon, 5)
    rig.unplug()
    for _ in range(100):
        _, h = await c.req("GET", "/api/health")
        if h["capture"]["state"] == "lost":
            break
        await asyncio.sleep(0.05)
    assert h["capture"]["state"] == "lost" and h["status"] == "degraded"
    assert "No such" in h["capture"]["error"]
    rig.replug()
    for _ in range(100):
        _, h = await c.req("GET", "/api/health")
        if h["capture"]["state"] == "running":
            break
        await asyncio.sleep(0.05)
    assert h["capture"]["state"] == "running" and h["capture"]["error"] is None


async def test_recording_survives_a_camera_dropout(api: Any) -> None:
    c, daemon, rig = api
    await _wait_frames(daemon, 10)
    assert (await c.req("POST", "/api/recordings/start", json={"pre_roll_s": 0}))[0] == 201
    await asyncio.sleep(0.4)
    rig.unplug()
    await asyncio.sleep(0.3)
    rig.replug()
    await asyncio.sleep(0.6)
    status, s = await c.req("POST", "/api/recordings/stop")
    assert status == 200 and s["status"] == "completed" and s["frame_count"] > 10


async def test_wedged_camera_shows_as_stalled(api: Any) -> None:
    c, daemon, rig = api
    daemon.config.capture.stall_timeout_s = 0.3
    await _wait_frames(daemon, 5)
    rig.stall()
    try:
        await asyncio.sleep(0.6)
        _, h = await c.req("GET", "/api/health")
        assert h["capture"]["state"] == "stalled" and h["capture"]["last_frame_age_s"] > 0.3
        assert not daemon.pipeline_alive()
    finally:
        rig.resume()
    await asyncio.sleep(0.3)
    _, h = await c.req("GET", "/api/health")
    assert h["capture"]["state"] == "running"


async def test_a_stuck_service_cannot_hold_the_stop(api: Any, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """One service whose close never returns: the stop goes on past it after its budget,
    finalises the recording and closes the database (what systemd's TimeoutStopSec needs)."""
    c, daemon, _ = api
    await _wait_frames(daemon, 10)
    status, started = await c.req("POST", "/api/recordings/start", json={"pre_roll_s": 0})
    assert status == 201, started
    await _wait_frames(daemon, daemon.pipeline.encoder.frames + 10)

    async def stuck() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(daemon.exports, "close", stuck)
    monkeypatch.setattr(daemon_module, "STOP_STEP_TIMEOUT_S", 0.5)
    await asyncio.wait_for(daemon.stop(), 20)
    assert "stop: exports did not finish in" in caplog.text
    db = await Database.open(daemon.paths.db)
    try:
        with viewing(SYSTEM):
            rec = await db.get_session(started["id"])
    finally:
        await db.close()
    assert rec.status == "completed" and rec.frame_count > 0
