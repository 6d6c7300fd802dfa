"""Shared by the replay, sessions-page and ghost tests: sessions made from the real clips, a
daemon on a copy of them, and small browser helpers.

Ingesting the clips runs BlazePose on every frame (about 30 s of CPU here), so the state
directory it makes is built once and cached on disk, keyed by the clips and by the source
of the code that shapes it (ingest, pose, storage); every test gets its own copy.

The template holds:

- ``short``      ingested ``climb_short_2s.mp4`` (73 frames, 30 fps)
- ``steepwall``  ingested ``climb_steepwall_static.mp4`` (377 frames, 25 fps, GOP 250)
- ``crashed``    status interrupted, the video lost in the crash, the short clip's poses
- ``missing``    completed, but its video file is gone from the disk
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_TOKENS, REPO, SHORT, STEEPWALL, DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
NAMES = {"short": 1, "steepwall": 2, "crashed": 3, "missing": 4}
#: Change when what the template holds changes (part of the cache key).
TEMPLATE_VERSION = "1"
CRASH_ERROR = "interrupted: the daemon stopped while recording; no video was written"


def _cache_key() -> str:
    h = hashlib.sha256()
    for clip in (SHORT, STEEPWALL):
        st = clip.stat()
        h.update(f"{clip.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for rel in ("climbd/ingest.py", "climbd/pose/__init__.py", "climbd/pose/backends.py",
                "climbd/storage/database.py",
                "climbd/storage/posecodec.py", "climbd/storage/segments.py"):
        h.update((REPO / rel).read_bytes())
    h.update(TEMPLATE_VERSION.encode())
    return h.hexdigest()[:16]


def _build(root: Path) -> None:
    state = root / "state"
    for clip, name in ((SHORT, "short"), (STEEPWALL, "steepwall")):
        r = subprocess.run(
            [sys.executable, "-m", "climbd", "ingest", str(clip), "--state-dir", str(state),
             "--name", name, "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=900,
            env={**os.environ, "GLOG_minloglevel": "2"})
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout.strip().splitlines()[-1])["id"] == NAMES[name]
    asyncio.run(_add_broken_sessions(state))


async def _add_broken_sessions(state: Path) -> None:
    from climbd.storage import Database
    from climbd.visibility import SYSTEM, viewing

    async with await Database.open(state / "climbd.db") as db:
        with viewing(SYSTEM):  # the test acts for the appliance (climbd.visibility)
            src = await db.poses(NAMES["short"])
            short = await db.get_session(NAMES["short"])
        crashed = await db.create_session(name="crashed", width=short.width,
                                          height=short.height, fps=short.fps)
        await db.append_poses(crashed.id, src.frames, src.times, src.image, src.world,
                              frame_count=short.frame_count, duration_s=short.duration_s)
        await db.finish_session(crashed.id, status="interrupted", error=CRASH_ERROR)
        missing = await db.create_session(name="missing", width=short.width,
                                          height=short.height, fps=short.fps,
                                          video_path=f"sessions/{NAMES['missing']}/video.mp4")
        await db.append_poses(missing.id, src.frames, src.times, src.image, src.world,
                              frame_count=short.frame_count, duration_s=short.duration_s)
        await db.finish_session(missing.id, status="completed")
        assert (crashed.id, missing.id) == (NAMES["crashed"], NAMES["missing"])


def template() -> Path:
    """The cached template state directory (built on first use, under a file lock)."""
    base = Path(tempfile.gettempdir()) / "climbd-replay-test-cache"
    base.mkdir(parents=True, exist_ok=True)
    root = base / _cache_key()
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            _build(root)
            (root / "done").write_text(time.ctime())
    return root / "state"


def copy_state(dest: Path) -> Path:
    """A private copy of the template state directory at ``dest``."""
    shutil.copytree(template(), dest)
    return dest


@dataclass
class Env:
    """A daemon on a copy of the template."""

    daemon: DaemonProcess
    state: Path

    @property
    def base(self) -> str:
        return self.daemon.base


def start_daemon(root: Path, *, source: Path | str = "/dev/video9", pose: bool = False,
                 extra_config: str = "", prepare: Callable[[Path], None] | None = None
                 ) -> Env:
    """``climbd run`` on a fresh copy of the template in ``root`` (no camera by default);
    ``prepare(state_dir)`` runs on the copy before the daemon starts."""
    state = copy_state(root / "state")
    if prepare is not None:
        prepare(state)
    cfg = root / "climbd.toml"
    cfg.write_text(f"[pose]\nenabled = {'true' if pose else 'false'}\n"
                   "[webrtc]\nhost_candidates = [\"127.0.0.1\"]\nice_timeout_s = 5.0\n"
                   + extra_config)
    live = str(source) != "/dev/video9"
    d = DaemonProcess(state, source, "--config", str(cfg), loop=live)
    d.wait_ready(90, capture=live and pose)
    if live and not pose:
        _wait_capture(d)
    return Env(d, state)


def _wait_capture(d: DaemonProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, h = d.get("/api/health")
        if status == 200 and h["capture"]["state"] == "running" and h["video"]["frames"] > 10:
            return
        time.sleep(0.2)
    raise AssertionError(f"capture did not start: {d.log()}")


# -- browser helpers -------------------------------------------------------------------------


async def wait_js(page: Any, fn: str, timeout: float = 30.0, arg: Any = None) -> Any:
    """Poll ``fn`` (a JavaScript function source) until it returns a truthy value.

    ``page.wait_for_function`` evaluates strings with ``eval``, which the pages' CSP
    (``script-src 'self'``) forbids; ``page.evaluate`` goes through the DevTools protocol.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await page.evaluate(fn, arg)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {fn} (last {last!r})")


#: JavaScript ``(p) => {...}`` over a web UI ``RecordedPlayer`` (webui/js/replay-player.js;
#: ``window.replay.player``, ``window.compare.A.player``): what it shows, seeks to, has drawn
#: and waits for, for the message of a test that timed out waiting for it to settle.
PLAYER_STATE = """(p) => ({ shown: p.shown && p.shown.index, target: p.target, queued: p.queued,
    drawn: p.overlay.last && p.overlay.last.frameTs, waitingPose: p.waitingPose,
    seeking: p.video.seeking, paused: p.video.paused, currentTime: p.video.currentTime,
    readyState: p.video.readyState, fallbacks: p.stats.seekedFallbacks })"""


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Any]:
    """A headless Debian Chromium (``/usr/bin/chromium`` with :data:`FLAGS`, never a
    downloaded one); yields the playwright ``Browser`` and closes it afterwards."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def chromium(**page_args: Any) -> Any:
    """A headless Debian Chromium (never a downloaded one) and one page; yields
    ``(browser, page, errors)`` where ``errors`` collects page errors."""
    async with launch_chromium() as browser:
        # the web UI runs with the admin token of the daemon under test (the newest
        # one started), as a browser extra header: it reaches fetch() and WebSockets
        headers = {"Authorization": f"Bearer {list(ADMIN_TOKENS.values())[-1]}"} if (
            ADMIN_TOKENS) else {}
        page = await browser.new_page(**{"viewport": {"width": 1280, "height": 800},
                                         "extra_http_headers": headers, **page_args})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield browser, page, errors


def decode_frames(video: Path) -> list[Any]:
    """Every frame of ``video`` as an RGB array (PyAV), in presentation order."""
    import av

    with av.open(str(video)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
