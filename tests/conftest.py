"""Shared fixtures: real clips from ../shared/media, a daemon process, polling, and the tiers.

Every test belongs to exactly one tier, declared by a marker (normally module-wide:
``pytestmark = pytest.mark.unit``); a test without one fails with a message saying so.
The tier is the marker closest to the test, so a module's ``pytestmark`` can be overridden
on one function. Select tiers with ``--tier unit,integration`` (``-m`` also works when no
test overrides its module's tier).

==============  =================================================================
``unit``        pure code, no subprocess, no network beyond an in-memory loop; the
                whole tier runs in well under a minute
``integration`` the in-process daemon or a stage of it with the fake camera at the
                device seam; real aiohttp on loopback, real aiortc, real SQLite files
``media``       MediaPipe BlazePose on the real clips (ingest, ``climbd run`` daemons)
``browser``     real headless Chromium (/usr/bin/chromium)
``system``      the install chroot, arm64 emulation, network namespaces, systemd tools:
                slow, subprocess-heavy, root
==============  =================================================================
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "media"
STEEPWALL = MEDIA / "climb_steepwall_static.mp4"   # 540x720, 25 fps, 377 frames
HANDHELD = MEDIA / "climb_vertical_handheld.mp4"   # 406x720, 29.97 fps, 552 frames
SHORT = MEDIA / "climb_short_2s.mp4"               # 404x720, 30 fps, 73 frames
CLIPS = [STEEPWALL, HANDHELD, SHORT]

os.environ.setdefault("GLOG_minloglevel", "2")

#: The test tiers, cheapest first (the order scripts/test runs them in).
TIERS = ("unit", "integration", "media", "browser", "system")
_TIER_KEY = pytest.StashKey[str | None]()


def tier_of(item: pytest.Item) -> str | None:
    """The tier of a collected test: the tier marker closest to it, or None."""
    for mark in item.iter_markers():
        if mark.name in TIERS:
            return mark.name
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", action="append", default=[], metavar="TIER[,TIER]",
                     help=f"run only tests of these tiers ({', '.join(TIERS)}); repeatable")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record each test's tier and keep only the ``--tier`` ones (untiered tests are kept,
    so that they fail)."""
    wanted = {t.strip() for arg in config.getoption("tier") for t in arg.split(",") if t.strip()}
    unknown = wanted - set(TIERS)
    if unknown:
        raise pytest.UsageError(f"--tier: unknown tier(s) {sorted(unknown)}; tiers are {TIERS}")
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        tier = tier_of(item)
        item.stash[_TIER_KEY] = tier
        (keep if not wanted or tier is None or tier in wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.stash.get(_TIER_KEY, None) is None:
        pytest.fail(
            f"{item.nodeid} has no tier marker. Declare one in its module, e.g.\n"
            f"    pytestmark = pytest.mark.integration\n"
            f"Tiers: {', '.join(TIERS)} (described in tests/conftest.py).", pytrace=False)


@pytest.fixture(scope="session")
def media() -> Path:
    """The shared test media folder (skips the test if it is absent)."""
    if not SHORT.exists():
        pytest.skip(f"test media not found at {MEDIA}")
    return MEDIA


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 30.0,
         raw: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    """A tiny blocking HTTP client for tests: returns (status, parsed JSON or bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    if "json" in ctype:
        return status, json.loads(payload)
    return status, payload


class DaemonProcess:
    """``climbd run`` as a real subprocess on 127.0.0.1."""

    def __init__(self, state_dir: Path, source: Path | str, *extra: str, loop: bool = True,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.state_dir = state_dir
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "climbd", "run", "--source", str(source),
               "--state-dir", str(state_dir), "--host", "127.0.0.1", "--port", str(self.port),
               *extra]
        if loop:
            cmd.append("--loop")
        self.log_path = state_dir.parent / f"daemon-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=REPO)

    def wait_ready(self, timeout: float = 60.0, capture: bool = True) -> dict[str, Any]:
        """Wait until /api/health answers (and capture runs, if asked); returns health."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, last = http("GET", self.base + "/api/health", timeout=2)
                if status == 200 and (not capture or (
                        last["capture"]["state"] == "running" and last["pose"]["results"] > 0)):
                    return dict(last)
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"daemon not ready in {timeout}s: {last}\n{self.log()}")

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return http("GET", self.base + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return http("POST", self.base + path, body if body is not None else {}, **kw)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs (needs root and mount(2); the test is skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    """Start ``climbd run`` subprocesses; all are stopped at teardown."""
    procs: list[DaemonProcess] = []

    def start(source: Path | str = STEEPWALL, *extra: str, state_dir: Path | None = None,
              loop: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(state_dir or tmp_path / "state", source, *extra, loop=loop, env=env)
        procs.append(d)
        return d

    yield start
    for d in procs:
        d.stop()
