"""Shared by the app-shell browser tests and ``scripts/screens``: a ``climbd run`` on a copy of
the ingested template (real clips) with a live looping camera, a Chromium page paired as a
wall tablet, and the layout checks every page must pass.

Everything WebRTC runs inside a private network namespace (``unshare -n``, loopback only):
:func:`rerun_in_netns` re-runs a test file's ``test_inner_*`` tests there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, STEEPWALL, DaemonProcess, run_in_private_netns
from tests.replay_support import CHROMIUM, copy_state, launch_chromium, wait_js

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
    "ghost": "/ui/replay.html?id=2&mode=ghost",  # the replay page's ghost over live
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


def netns_available(*, media: bool = True) -> str | None:
    """None if a private network namespace with Chromium (and, with ``media``, the test
    clips) can be made here, else why not."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return "needs root, unshare and ip to make a network namespace"
    if not CHROMIUM.exists():
        return "Debian chromium is not installed"
    if media and not STEEPWALL.exists():
        return "test media missing"
    return None


def inner_tests(test_file: Path) -> list[str]:
    """The names of the ``test_inner_*`` functions defined in ``test_file`` (read from its
    syntax tree, so the outer test names exactly what the inner run must pass)."""
    tree = ast.parse(test_file.read_text(), str(test_file))
    return [n.name for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name.startswith("test_inner_")]


def rerun_in_netns(test_file: Path, tmp_path: Path, *, timeout: float = 1500,
                   inner_timeout: float = 900) -> dict[str, str]:
    """Run the ``test_inner_*`` tests of ``test_file`` in a private network namespace
    (``unshare -n``, loopback only; :func:`tests.conftest.run_in_private_netns`) and check
    from the inner run's exit code and JUnit report that every one of them passed.

    Returns: {test id: "passed"}. Raises: AssertionError naming what failed, errored, was
    skipped or did not run, with the inner output. ``timeout``/``inner_timeout`` in s (the
    whole run / each inner test)."""
    names = inner_tests(test_file)
    assert names, f"{test_file.name} defines no test_inner_* tests"
    return run_in_private_netns(test_file, names, tmp_path, timeout=timeout,
                                inner_timeout=inner_timeout)


#: Marks a test that runs only inside the namespace (in the re-run of its file).
inner = pytest.mark.skipif(not IN_NETNS, reason="runs inside the network namespace only")


def netns_suite(test_file: str, *, timeout: float, inner_timeout: float = 900,
                media: bool = True,
                also_needs: Callable[[], str | None] | None = None) -> Callable[..., None]:
    """The outer test of a browser suite: assign it to a ``test_*`` name in the test file
    (``test_x_in_a_private_network_namespace = netns_suite(__file__, timeout=900)``). Outside
    the namespace it skips when :func:`netns_available` (with ``media``) or ``also_needs``
    (a check returning why not, or None) says the suite cannot run here, else re-runs the
    file's ``test_inner_*`` tests with :func:`rerun_in_netns`. ``timeout`` bounds the whole
    re-run, ``inner_timeout`` each inner test, in s (the outer test's own pytest-timeout is
    ``timeout`` + 60 s)."""

    @pytest.mark.skipif(IN_NETNS, reason="already inside the namespace")
    @pytest.mark.timeout(timeout + 60)
    def outer(tmp_path: Path) -> None:
        why = netns_available(media=media) or (also_needs() if also_needs else None)
        if why:
            pytest.skip(why)
        rerun_in_netns(Path(test_file), tmp_path, timeout=timeout, inner_timeout=inner_timeout)

    outer.__doc__ = f"The test_inner_* tests of {Path(test_file).name}, in unshare -n."
    return outer


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


#: A headless Debian Chromium (never a downloaded one): ``async with browser() as b``.
browser = launch_chromium


def ui_daemon_fixture(name: str, *, pose: bool, extra_config: str = "") -> Any:
    """A module-scoped ``daemon`` fixture: a :class:`UiDaemon` (``pose``, ``extra_config``)
    in a fresh temporary folder ``name``, started and stopped once per inner run; skips
    outside the namespace. Assign it in the test file: ``daemon = ui_daemon_fixture(...)``."""

    @pytest.fixture(scope="module", name="daemon")
    def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiDaemon]:
        if not IN_NETNS:
            pytest.skip("inner")
        d = start_ui_daemon(tmp_path_factory.mktemp(name), pose=pose, extra_config=extra_config)
        yield d
        d.stop()

    return daemon


def browser_fixture(name: str = "chromium") -> Any:
    """A fixture ``name`` yielding a fresh :func:`browser` (a playwright ``Browser``) per
    test. Assign it in the test file: ``chromium = browser_fixture()``."""

    @pytest.fixture(name=name)
    async def chromium() -> AsyncIterator[Any]:
        async with browser() as b:
            yield b

    return chromium


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


async def settled(page: Any, timeout: float = 30.0) -> None:
    """Wait for the page's late layout instead of a fixed sleep: its web fonts loaded, the
    shell's first ``/api/health`` answered (so its banner is decided, shown or not), then
    two animation frames (style and layout have run since)."""
    await wait_js(page, """() => document.fonts.status === 'loaded' && window.climbdShell
                    && window.climbdShell.health !== null""", timeout)
    await page.evaluate("""() => new Promise((done) =>
        requestAnimationFrame(() => requestAnimationFrame(done)))""")


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


__all__ = ["IN_NETNS", "PAGES", "SIZES", "UiDaemon", "browser", "browser_fixture",
           "collect_errors", "inner", "inner_tests", "layout_problems", "netns_available",
           "netns_suite", "paired_context", "rerun_in_netns", "settled", "start_ui_daemon",
           "ui_daemon_fixture", "wait_js"]
