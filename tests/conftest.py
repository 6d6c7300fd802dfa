"""Shared fixtures: real clips from ../shared/media, free loopback ports, a daemon process."""

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


class DaemonProcess:
    """``climbd run`` as a real subprocess on 127.0.0.1."""

    def __init__(self, state_dir: Path, source: Path | str, *extra: str, loop: bool = True,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.state_dir = state_dir
        #: admin API token (made by wait_ready over the admin socket)
        self.token: str | None = None
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
        """Wait until /api/health answers (and capture runs, if asked); returns health.

        Also makes an admin API token over the admin socket (:attr:`token`), which
        :func:`http`, :meth:`get` and :meth:`post` then send."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if self.base not in ADMIN_TOKENS and (self.state_dir / "admin.sock").exists():
                self.token = admin_token(self.state_dir, timeout=5)
                ADMIN_TOKENS[self.base] = self.token
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
        ADMIN_TOKENS.pop(self.base, None)
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
