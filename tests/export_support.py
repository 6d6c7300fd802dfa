"""Helpers shared by the export, share and retention tests (no tests in this module).

- :func:`ingested_template`: a state directory holding ``climb_short_2s.mp4`` ingested
  with pose on every frame (``climbd ingest`` in a subprocess, once per test run); tests
  copy it with :func:`copy_template`.
- :func:`add_video_session`: a completed session whose video is a clip remuxed without
  re-encoding (no pose), created in a chosen past, fast enough for retention tests.
- :func:`tmpfs`: a small tmpfs mount (root only; the test is skipped if mounting fails).
- :func:`start_daemon`: the in-process daemon of tests/test_api.py (fake camera, pose off).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from climbd.config import Config
from climbd.daemon import Daemon
from climbd.storage import Database, SessionRecord, finalize
from climbd.visibility import SYSTEM, viewing
from tests.conftest import REPO, SHORT
from tests.fakes import CameraRig
from tests.securitykit import admin_headers

_TEMPLATE: dict[str, Path] = {}


def ingested_template() -> Path:
    """A state dir with session 1 = SHORT ingested with pose (built once per run)."""
    if "short" not in _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="climbd-export-template-"))
        atexit.register(shutil.rmtree, root, True)
        state = root / "state"
        out = subprocess.run(
            [sys.executable, "-m", "climbd", "ingest", str(SHORT), "--state-dir", str(state),
             "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.splitlines()[-1])
        assert result["id"] == 1 and result["frames_with_pose"] > 0
        _TEMPLATE["short"] = state
    return _TEMPLATE["short"]


def copy_template(dst: Path) -> Path:
    """Copy the ingested template state dir to ``dst``; returns ``dst``."""
    shutil.copytree(ingested_template(), dst)
    return dst


async def add_video_session(db: Database, state_dir: Path, clip: Path, *, name: str = "",
                            created_at: float | None = None, status: str = "completed",
                            pinned: bool = False) -> SessionRecord:
    """A session whose ``video.mp4`` is ``clip`` remuxed (no pose rows)."""
    from climbd.storage import probe

    info = probe(clip)
    fps = info.frames / info.duration_s
    rec = await db.create_session(name=name or clip.stem, width=info.width,
                                  height=info.height, fps=fps, source=str(clip))
    directory = state_dir / "sessions" / str(rec.id)
    directory.mkdir(parents=True, exist_ok=True)
    final = await asyncio.to_thread(finalize, clip, directory / "video.mp4")
    rec = await db.finish_session(rec.id, status=status,  # type: ignore[arg-type]
                                  frame_count=final.frames, duration_s=final.duration_s,
                                  video_path=f"sessions/{rec.id}/video.mp4")
    with viewing(SYSTEM):  # the test acts for the appliance (climbd.visibility)
        if pinned:
            rec = await db.update_session(rec.id, pinned=True)
        if created_at is not None:
            await set_created_at(db, rec.id, created_at)
            rec = await db.get_session(rec.id)
    return rec


async def set_created_at(db: Database, session_id: int, created_at: float) -> None:
    """Move a session's creation time (tests only: the catalog has no API for it)."""
    async with db.transaction("test: set created_at") as conn:
        await conn.execute("UPDATE sessions SET created_at = ? WHERE id = ?",
                           (created_at, session_id))


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"24m"``) on ``path``; unmount afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                          str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {out.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Client:
    """A tiny aiohttp client: ``req`` returns (status, JSON or bytes)."""

    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.s, self.base = session, base

    async def req(self, method: str, path: str, raw: bool = False, **kw: Any
                  ) -> tuple[int, Any]:
        """(status, parsed JSON) or (status, bytes) for other types or ``raw=True``."""
        url = path if path.startswith("http") else self.base + path
        async with self.s.request(method, url, **kw) as r:
            if r.content_type == "application/json" and not raw:
                return r.status, await r.json()
            return r.status, await r.read()

    async def wait_export(self, export_id: int, timeout: float = 120.0) -> dict[str, Any]:
        """Poll an export until it is no longer queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.req("GET", f"/api/exports/{export_id}")
            assert status == 200, body
            if body["status"] not in ("queued", "running"):
                return dict(body)
            await asyncio.sleep(0.1)
        raise AssertionError(f"export {export_id} did not finish in {timeout} s")


def daemon_config(**sections: dict[str, Any]) -> Config:
    """The test daemon's config: fake camera, pose off, loopback, small reserve.

    Export workers run at nice 10 without SCHED_IDLE here, so that functional tests do not
    wait behind every other process of a busy test machine; the shipped priority (nice 19 +
    SCHED_IDLE) is checked by its own test and measured by bench/bench_export.py.
    """
    data: dict[str, Any] = {
        "pose": {"enabled": False}, "server": {"host": "127.0.0.1", "port": 0},
        "capture": {"retry_initial_s": 0.05, "retry_max_s": 0.2, "source": "/dev/video9"},
        "recording": {"pre_roll_s": 2.0}, "storage": {"reserve_mb": 0.5},
        "export": {"nice": 10, "idle_priority": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


@contextlib.asynccontextmanager
async def start_daemon(state_dir: Path, config: Config | None = None,
                       clip: Path = SHORT) -> AsyncIterator[tuple[Client, Daemon]]:
    """The real daemon in this process on 127.0.0.1 with a fake camera playing ``clip``."""
    rig = CameraRig(clip, fps=30)
    daemon = Daemon(config or daemon_config(), state_dir, source_factory=rig.open)
    await daemon.start()
    try:
        async with aiohttp.ClientSession(headers=await admin_headers(daemon)) as s:
            yield Client(s, f"http://127.0.0.1:{daemon.port}"), daemon
    finally:
        await daemon.stop()


async def wait_frames(daemon: Daemon, n: int) -> None:
    """Wait until the fake camera's frames have been encoded ``n`` times."""
    for _ in range(400):
        if daemon.pipeline.encoder.frames >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no frames from the fake camera")
