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
``system``      the daemon against other real server processes and their outages (an
                RTSP camera server, the Mosquitto broker, an S3 server), the install
                chroot, arm64 emulation, systemd tools: slow, subprocess-heavy, root;
                run after the other tiers, one test at a time
==============  =================================================================
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record each test's tier, keep only the ``--tier`` ones (untiered tests are kept, so
    that they fail), order them cheapest tier first, and put them in pytest-xdist groups.

    Groups (used with ``--dist loadgroup``): each module is one group, so module-scoped
    fixtures (a daemon, the install chroot) are built once; every test marked ``timing``
    (it asserts wall-clock rates or delays) is in its tier's group ``timing-<tier>``, so
    no two of them run at the same time on different workers (tiers run in order).
    """
    wanted = {t.strip() for arg in config.getoption("tier") for t in arg.split(",") if t.strip()}
    unknown = wanted - set(TIERS)
    if unknown:
        raise pytest.UsageError(f"--tier: unknown tier(s) {sorted(unknown)}; tiers are {TIERS}")
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        tier = tier_of(item)
        item.stash[_TIER_KEY] = tier
        item.user_properties.append(("tier", tier or "none"))  # reaches the xdist controller
        if item.get_closest_marker("xdist_group") is None:
            group = (f"timing-{tier}" if item.get_closest_marker("timing")
                     else Path(item.nodeid.split("::")[0]).stem)
            item.add_marker(pytest.mark.xdist_group(group))
        _xdist_group_nodeid(config, item)
        if item.get_closest_marker("timing") and item.get_closest_marker("flaky") is None:
            # a wall-clock check on a shared 2-core machine gets one more try
            # (pytest-rerunfailures; the rerun is reported, and a second failure fails)
            item.add_marker(pytest.mark.flaky(reruns=1))
        (keep if not wanted or tier is None or tier in wanted else dropped).append(item)
    keep.sort(key=lambda i: TIERS.index(t) if (t := i.stash[_TIER_KEY]) else -1)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def _xdist_group_nodeid(config: pytest.Config, item: pytest.Item) -> None:
    """Give a pytest-xdist worker's item the ``<nodeid>@<group>`` id that ``--dist loadgroup``
    schedules by. pytest-xdist 3.8 sets ``item._nodeid`` for this, which pytest >= 9.2 no
    longer reads (the id lives in ``item._id``), so every test would be scheduled alone."""
    if not getattr(config.option, "loadgroup", False) or "@" in item.nodeid:
        return
    try:
        from _pytest.nodeid import coerce_node_id  # pytest >= 9.2
    except ImportError:  # older pytest: pytest-xdist's own hook does it
        return
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


class _TierClock:
    """Per-tier time of a run, from the test reports (which carry the tier from workers).

    A tier's wall time is the union of the intervals in which at least one of its tests
    (setup, call or teardown) was running, on any worker: with tiers interleaved across
    pytest-xdist workers the tiers' wall times add up to more than the run's."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.busy: dict[str, float] = {}
        self.tests: dict[str, int] = {}

    def add(self, report: pytest.TestReport) -> None:
        tier = dict(report.user_properties).get("tier")
        if not isinstance(tier, str):
            return
        self.spans.setdefault(tier, []).append((report.start, report.stop))
        self.busy[tier] = self.busy.get(tier, 0.0) + report.duration
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.tests[tier] = self.tests.get(tier, 0) + 1

    def wall(self, tier: str) -> float:
        """Seconds in which some test of ``tier`` was running."""
        total, end = 0.0, -math.inf
        for a, b in sorted(self.spans.get(tier, [])):
            if b > end:
                total += b - max(a, end)
                end = b
        return total


_CLOCK = _TierClock()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _CLOCK.add(report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config
                            ) -> None:
    """Print each tier's wall time (while some test of it ran) and its summed test time."""
    if hasattr(config, "workerinput") or not _CLOCK.spans:
        return
    tr = terminalreporter
    tr.write_sep("=", "time per tier")
    for tier in [*TIERS, "none"]:
        if tier in _CLOCK.spans:
            wall = _CLOCK.wall(tier)
            tr.write_line(f"{tier:<12} {_CLOCK.tests.get(tier, 0):4d} tests   wall {wall:7.1f} s"
                          f"   test time {_CLOCK.busy[tier]:7.1f} s")
    out = os.environ.get("CLIMBD_TIER_TIMES")
    if out and os.environ.get("CLIMBD_TEST_NETNS") != "1":  # scripts/test collects these
        # (not from the inner runs in a network namespace: their time is their outer test's)
        with open(out, "a") as f:
            for tier in _CLOCK.spans:
                f.write(json.dumps({"tier": tier, "tests": _CLOCK.tests.get(tier, 0),
                                    "wall_s": round(_CLOCK.wall(tier), 1),
                                    "test_s": round(_CLOCK.busy[tier], 1)}) + "\n")


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


T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05,
               what: str | Callable[[], str] = "") -> T:
    """Poll ``predicate()`` every ``interval`` s until it returns a truthy value; return it.

    Tests use this instead of fixed sleeps: they go on as soon as the condition holds and
    wait at most ``timeout`` s on a slow machine.

    Raises:
        AssertionError: the condition did not hold within ``timeout`` s (``what`` names it;
            a callable is called then, e.g. to show the last state seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not true within {timeout} s: {detail or predicate}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], T | Awaitable[T | None] | None],
                           timeout: float = 30.0, interval: float = 0.05,
                           what: str | Callable[[], str] = "") -> T:
    """:func:`wait_until` for asyncio tests: ``predicate`` may be a plain or async function;
    the loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not true within {timeout} s: {detail or predicate}")
        await asyncio.sleep(interval)


#: Admin API tokens of the daemons tests started, by base URL (``http://127.0.0.1:port``):
#: made over each daemon's local admin socket (see :func:`admin_token`). :func:`http` sends
#: the matching one unless told ``anonymous=True`` — a request without credentials is
#: anonymous, also from 127.0.0.1.
ADMIN_TOKENS: dict[str, str] = {}


def admin_token(state_dir: Path, name: str = "tests", scope: str = "admin",
                timeout: float = 30.0) -> str:
    """A new API token (default: admin scope) made through the daemon's local admin socket
    (``<state_dir>/admin.sock``), as ``climbd token create`` does; waits for the socket."""
    from climbd.security.local import AdminClient, AdminSocketError

    client = AdminClient(state_dir / "admin.sock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(client.create_token(name, scope)["token"])
        except AdminSocketError as exc:
            if exc.status or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def auth_headers(base: str) -> dict[str, str]:
    """``Authorization: Bearer`` with the admin token of the daemon at ``base``."""
    token = ADMIN_TOKENS.get(base.rstrip("/"))
    return {"Authorization": f"Bearer {token}"} if token else {}


def http(method: str, url: str, body: Any = None, timeout: float = 30.0,
         raw: bytes | None = None, headers: dict[str, str] | None = None,
         anonymous: bool = False) -> tuple[int, Any]:
    """A tiny blocking HTTP client for tests: returns (status, parsed JSON or bytes).

    Sends the admin token of a daemon started by :class:`DaemonProcess` (registered in
    :data:`ADMIN_TOKENS`) unless ``anonymous`` or the caller sets ``Authorization``."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = dict(headers or {})
    if not anonymous and "Authorization" not in headers:
        for base, token in ADMIN_TOKENS.items():
            if url.startswith(base + "/"):
                headers["Authorization"] = f"Bearer {token}"
                break
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
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


#: The daemon's log line once its HTTP server listens (climbd/daemon.py).
_LISTENING = re.compile(rb"listening on https?://\S+:(\d+)")


class DaemonProcess:
    """``climbd run`` as a real subprocess on 127.0.0.1.

    By default the daemon binds port 0 (the OS picks a free one, so parallel tests cannot
    race for a port) and :attr:`port` is read from its "listening on" log line.
    """

    def __init__(self, state_dir: Path, source: Path | str, *extra: str, loop: bool = True,
                 env: dict[str, str] | None = None, port: int = 0):
        self.state_dir = state_dir
        #: admin API token (made by wait_ready over the admin socket)
        self.token: str | None = None
        self._port: int | None = port or None
        self.cmd = [sys.executable, "-m", "climbd", "run", "--source", str(source),
                    "--state-dir", str(state_dir), "--host", "127.0.0.1", "--port", str(port),
                    *extra]
        if loop:
            self.cmd.append("--loop")
        self.env = {**os.environ, **(env or {})}
        fd, name = tempfile.mkstemp(prefix="daemon-", suffix=".log", dir=state_dir.parent)
        self.log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=REPO)

    def respawn(self) -> None:
        """Start the daemon again (after it stopped) on the port it had."""
        assert self.proc.poll() is not None, "still running"
        port = self.port
        i = self.cmd.index("--port")
        self.cmd[i + 1] = str(port)
        self.proc = self._spawn()

    @property
    def port(self) -> int:
        """The port the daemon listens on (waits up to 60 s for it to say so)."""
        if self._port is None:
            def listening() -> int | None:
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
                self._log.flush()
                m = _LISTENING.search(self.log_path.read_bytes())
                return int(m.group(1)) if m else None
            self._port = wait_until(listening, 60, 0.05, lambda: f"no port in\n{self.log()}")
        return self._port

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0, capture: bool = True) -> dict[str, Any]:
        """Wait until /api/health answers (and capture runs, if asked); returns health.

        Also makes an admin API token over the admin socket (:attr:`token`), which
        :func:`http`, :meth:`get` and :meth:`post` then send."""
        last: Any = None

        def ready() -> dict[str, Any] | None:
            nonlocal last
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if self.base not in ADMIN_TOKENS:  # full health needs a role
                if not (self.state_dir / "admin.sock").exists():
                    return None
                self.token = admin_token(self.state_dir, timeout=5)
                ADMIN_TOKENS[self.base] = self.token
            try:
                status, last = http("GET", self.base + "/api/health", timeout=2)
            except (OSError, ValueError):
                return None
            if status == 200 and (not capture or (
                    last["capture"]["state"] == "running" and last["pose"]["results"] > 0)):
                return dict(last)
            return None

        health = wait_until(ready, timeout, 0.2, lambda: f"daemon not ready: {last}\n{self.log()}")
        if self.base not in ADMIN_TOKENS:  # health answered before the admin socket was made
            sock = self.state_dir / "admin.sock"
            deadline = time.monotonic() + 30
            while not sock.exists() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if sock.exists() and self.proc.poll() is None:
                self.token = admin_token(self.state_dir, timeout=5)
                ADMIN_TOKENS[self.base] = self.token
        return health

    def health_until(self, predicate: Callable[[dict[str, Any]], object], timeout: float = 30.0
                     ) -> dict[str, Any]:
        """Poll /api/health until ``predicate(health)`` holds; returns that health."""
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            status, last = self.get("/api/health", timeout=5)
            return last if status == 200 and predicate(last) else None

        return wait_until(check, timeout, 0.1, lambda: f"health was {last}\n{self.log()}")

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
        if self._port is not None:
            ADMIN_TOKENS.pop(f"http://127.0.0.1:{self._port}", None)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                tail = self.log_path.read_bytes()[-4000:].decode(errors="replace")
                print(f"daemon ignored SIGTERM for 30 s; its log ends:\n{tail}",
                      file=sys.stderr)
        self._log.close()
        return self.proc.returncode


class TimeBudget:
    """Wall-clock seconds shared by several tests (a fuzzer's), handed out in fair shares:
    each test, when it starts, may use what is left divided by the tests still to come.
    A fuzzer runs its cases in chunks and stops at its share, so a slow or loaded machine
    runs fewer generated cases instead of taking minutes longer; :attr:`short` says so.

    Args:
        seconds: the whole budget, from the first :meth:`share` on.
        parts: how many tests share it.
    """

    def __init__(self, seconds: float, parts: int):
        self.seconds, self.parts_left = seconds, parts
        self.end: float | None = None
        self.short = False  # some test stopped at its share before all its cases ran

    def share(self) -> float:
        """The ``time.monotonic()`` deadline for the test that starts now."""
        now = time.monotonic()
        if self.end is None:
            self.end = now + self.seconds
        parts, self.parts_left = max(1, self.parts_left), max(0, self.parts_left - 1)
        return now + max(0.0, self.end - now) / parts

    def run(self, chunk: Callable[[int], int], cases: int) -> int:
        """Call ``chunk(n)`` (runs up to n cases, returns how many ran) with n = 8, 16, 32, ...
        until ``cases`` ran or this test's share is used up; returns the cases run. Chunks
        run until at least one case ran."""
        deadline, ran, n = self.share(), 0, 8
        while ran < cases:
            ran += chunk(min(n, cases - ran))
            n *= 2
            now = time.monotonic()
            # past the share: stop, once some case ran (or 30 s later if none can)
            if now >= deadline and ran < cases and (ran > 0 or now >= deadline + 30):
                self.short = True
                break
        return ran


def run_in_private_netns(test_file: Path, inner_tests: list[str], tmp_path: Path,
                         timeout: float = 900, inner_timeout: float = 600) -> dict[str, str]:
    """Run ``test_file``'s ``inner`` tests in a fresh network namespace (``unshare -n``:
    only a loopback interface exists) with ``CLIMBD_TEST_NETNS=1``; check that every test
    named in ``inner_tests`` ran and passed (none failed, errored or skipped). ``timeout``
    bounds the whole inner run, ``inner_timeout`` each inner test (pytest-timeout), in s.

    Returns: {test id: "passed"} from the inner run's JUnit XML.
    Raises: AssertionError naming the tests that did not pass, with the inner output.
    """
    junit = tmp_path / "inner.xml"
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "pytest", str(test_file), "-k", "inner", "-q",
           "-p", "no:cacheprovider", "-o", "addopts=", f"--timeout={inner_timeout:g}",
           f"--junitxml={junit}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "CLIMBD_TEST_NETNS": "1"})
    out = r.stdout + r.stderr
    assert junit.exists(), f"the inner run wrote no report (exit {r.returncode}):\n{out[-8000:]}"
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[case.get("name", "?")] = next(iter(sorted(kinds)), "passed")
    bad = {name: o for name, o in outcomes.items() if o != "passed"}
    ran = {name.split("[")[0] for name in outcomes}
    missing = sorted(set(inner_tests) - ran)
    assert not bad and not missing and r.returncode == 0, (
        f"not passed: {bad}; did not run: {missing}; exit {r.returncode}\n{out[-8000:]}")
    return outcomes


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs (needs root and mount(2); the test is skipped otherwise)."""
    yield from _tmpfs(tmp_path, "300k")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: room for a fresh catalog with every migration and its WAL, which a
    test then fills with a ballast file (needs root and mount(2); skipped otherwise)."""
    yield from _tmpfs(tmp_path, "1m")


def _tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
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
    codes = {d.log_path.name: d.stop() for d in procs}
    # SIGTERM is a clean stop: exit 0 (or killed on purpose by the test, -9)
    unclean = {name: rc for name, rc in codes.items() if rc not in (0, -signal.SIGKILL)}
    assert not unclean, f"daemons did not stop cleanly on SIGTERM: {unclean}"
