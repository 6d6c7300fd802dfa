"""Shared by the app-shell browser tests and ``scripts/screens``: a ``climbd run`` on a copy of
the ingested template (real clips) with a live looping camera, a Chromium page paired as a
wall tablet, and the layout checks every page must pass.

Everything WebRTC runs inside a private network namespace (``unshare -n``, loopback only):
:func:`rerun_in_netns` re-runs a test file there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO, STEEPWALL, DaemonProcess
from tests.replay_support import CHROMIUM, FLAGS, copy_state

IN_NETNS = os.environ.get("CLIMBD_TEST_NETNS") == "1"
SIZES = {"landscape": (1280, 800), "portrait": (800, 1280), "phone": (390, 844)}
#: Smallest target, CSS px: tablets (either side >= 600 px) and phones.
MIN_TABLET, MIN_PHONE = 64, 48
#: Every page of the app, as a path (replay needs a session id).
PAGES = {
    "live": "/",
    "delayed": "/?mode=delayed",
    "sessions": "/ui/sessions.html",
    "replay": "/ui/replay.html?id=2",
    "compare": "/ui/compare.html?a=1&b=2",
    "settings": "/ui/settings.html",
    "pair": "/pair",
}
CONFIG = """
[pose]
enabled = {pose}
workers = 1
[webrtc]
host_candidates = ["127.0.0.1"]
max_viewers = 6
ice_timeout_s = 5.0
"""


def netns_available() -> str | None:
    """None if a private network namespace can be made here, else why not."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return "needs root, unshare and ip to make a network namespace"
    if not CHROMIUM.exists():
        return "Debian chromium is not installed"
    if not STEEPWALL.exists():
        return "test media missing"
    return None


def rerun_in_netns(test_file: Path, expect_passed: int, timeout: float = 1500) -> str:
    """Run the ``inner`` tests of ``test_file`` in ``unshare -n``; returns the output and
    asserts that exactly ``expect_passed`` passed."""
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "pytest", str(test_file), "-k", "inner", "-q",
           "-p", "no:cacheprovider", "-o", "addopts=", "--timeout=900"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "CLIMBD_TEST_NETNS": "1"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-8000:]
    assert re.search(rf"\b{expect_passed} passed\b", out), out[-3000:]
    return out


class UiDaemon(DaemonProcess):
    """``climbd run`` on a copy of the template with a looping clip as the camera; can be
    killed and started again on the same port (DaemonProcess.respawn)."""

    def __init__(self, root: Path, *, pose: bool = True, extra_config: str = ""):
        state = copy_state(root / "state")
        self.cfg = root / "climbd.toml"
        self.cfg.write_text(CONFIG.format(pose="true" if pose else "false") + extra_config)
        super().__init__(state, STEEPWALL, "--config", str(self.cfg))

    def pairing_code(self, admin: bool = False) -> str:
        """A single-use pairing code, made the way an owner does (``climbd pair``)."""
        cmd = [sys.executable, "-m", "climbd", "pair", "--state-dir", str(self.state_dir),
               "--config", str(self.cfg)] + (["--admin"] if admin else [])
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[0]

    def wait_capture(self, timeout: float = 90) -> None:
        """Until the camera runs and frames are encoded."""
        self.health_until(lambda h: h["capture"]["state"] == "running"
                          and h["video"]["frames"] > 10, timeout)


def start_ui_daemon(root: Path, *, pose: bool = True, extra_config: str = "") -> UiDaemon:
    d = UiDaemon(root, pose=pose, extra_config=extra_config)
    d.wait_ready(120, capture=False)
    d.wait_capture()
    return d


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    """A headless Debian Chromium (never a downloaded one)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def paired_context(b: Any, d: UiDaemon, size: str = "landscape", *,
                         name: str = "Wall tablet", storage: Any = None, **kw: Any) -> Any:
    """A browser context paired as a wall tablet (``storage``: reuse a saved pairing)."""
    w, h = SIZES[size]
    ctx = await b.new_context(viewport={"width": w, "height": h}, has_touch=True,
                              storage_state=storage, **kw)
    if storage is None:
        page = await ctx.new_page()
        await page.goto(f"{d.base}/pair")
        status = await page.evaluate(
            """async ([code, name]) => (await fetch('/api/auth/pair', {method: 'POST',
                headers: {'Content-Type': 'application/json'}, credentials: 'same-origin',
                body: JSON.stringify({code, name})})).status""", [d.pairing_code(), name])
        assert status == 201, status
        await page.close()
    return ctx


def collect_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


async def layout_problems(page: Any) -> dict[str, Any]:
    """What breaks the layout rules on the page as shown: horizontal overflow, and visible
    buttons/links/inputs smaller than the target size (64 px on tablets, 48 on phones)."""
    return await page.evaluate(f"""() => {{
      const w = window.innerWidth, h = window.innerHeight;
      const min = Math.min(w, h) >= 600 ? {MIN_TABLET} : {MIN_PHONE};
      const small = [];
      for (const e of document.querySelectorAll(
          'button, a[href], input:not([type=hidden]), select, textarea, [role=button]')) {{
        const r = e.getBoundingClientRect();
        if (!r.width || !r.height) continue;               // not shown
        const st = getComputedStyle(e);
        if (st.visibility === 'hidden' || st.display === 'none') continue;
        if (e.closest('dialog') && !e.closest('dialog').open) continue;
        if (e.tagName === 'A' && !e.closest('nav, header, .button, .row, .actions, .toolbar')
            && !e.classList.contains('button') && e.closest('p')) continue;  // a link in text
        if (r.width < min - 0.5 || r.height < min - 0.5)
          small.push([e.id || e.className || e.tagName, Math.round(r.width), Math.round(r.height),
                      (e.textContent || '').trim().slice(0, 30)]);
      }}
      const vp = document.querySelector('meta[name=viewport]');
      return {{ scrollWidth: document.documentElement.scrollWidth, innerWidth: w, min, small,
               viewport: vp ? vp.content : null }};
    }}""")


async def wait_js(page: Any, fn: str, timeout: float = 30.0, arg: Any = None) -> Any:
    """Poll ``fn`` (JavaScript function source) until truthy (the pages' CSP forbids eval,
    so ``wait_for_function`` cannot be used)."""
    import asyncio

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await page.evaluate(fn, arg)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {fn} (last {last!r})")


__all__ = ["IN_NETNS", "PAGES", "SIZES", "UiDaemon", "browser", "collect_errors",
           "layout_problems", "netns_available", "paired_context", "rerun_in_netns",
           "start_ui_daemon", "wait_js"]
