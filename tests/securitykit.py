"""Test helpers for the access-control layer: an in-process daemon with a chosen
``[security]`` config, credentials made through the daemon's local admin socket, and HTTP
agents that each hold their own cookies (one per simulated device), pair, log in and send
the CSRF header like the web UI does.

A request without credentials is anonymous, also from 127.0.0.1. Tests that need the admin
use :func:`admin_headers` (an admin-scope API token from the admin socket, as
``climbd token create --scope admin`` makes)::

    async with secure_daemon(tmp_path) as (daemon, base):
        async with aiohttp.ClientSession(headers=await admin_headers(daemon)) as s: ...
        async with Agent(base) as tablet:
            await tablet.pair(await new_code(daemon))
            status, body = await tablet.req("GET", "/api/sessions")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp

from climbd.api.security import SECURITY
from climbd.config import Config
from climbd.daemon import Daemon
from climbd.security import crypto
from climbd.security.local import AdminClient
from tests.conftest import SHORT
from tests.fakes import CameraRig

#: Cheap scrypt for tests (production: crypto.DEFAULT_SCRYPT).
FAST_SCRYPT = crypto.ScryptParams(n=2**10, r=8, p=1)
ADMIN_PASSWORD = "correct horse battery"


def config(sections: dict[str, Any] | None = None, **security: Any) -> Config:
    """A daemon config for in-process tests: fake camera, no pose, ICE on loopback, the
    given security keys (and other sections)."""
    return Config.model_validate({
        "pose": {"enabled": False}, "server": {"host": "127.0.0.1", "port": 0},
        "capture": {"retry_initial_s": 0.05, "retry_max_s": 0.2, "source": "/dev/video9"},
        "recording": {"pre_roll_s": 2.0},
        "retention": {"floor_mb": 0, "headroom_s": 0},
        "webrtc": {"host_candidates": ["127.0.0.1"]},
        **(sections or {}),
        "security": security,
    })


@contextlib.asynccontextmanager
async def secure_daemon(tmp_path: Path, *, clip: Path = SHORT,
                        sections: dict[str, Any] | None = None,
                        **security: Any) -> AsyncIterator[tuple[Daemon, str]]:
    """A started in-process daemon on 127.0.0.1 and its base URL."""
    rig = CameraRig(clip, fps=30)
    daemon = Daemon(config(sections, **security), tmp_path / "state", source_factory=rig.open)
    await daemon.start()
    try:
        yield daemon, f"http://127.0.0.1:{daemon.port}"
    finally:
        await daemon.stop()


async def admin_token(daemon: Daemon, scope: str = "admin", name: str = "tests") -> str:
    """A new API token (default: admin scope) made over the in-process daemon's admin
    socket, exactly as ``climbd token create`` does."""
    import asyncio

    client = AdminClient(daemon.state_dir / "admin.sock")
    answer = await asyncio.to_thread(client.create_token, name, scope)
    return str(answer["token"])


async def admin_headers(daemon: Daemon, scope: str = "admin") -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for a new token of ``scope`` (see
    :func:`admin_token`)."""
    return {"Authorization": f"Bearer {await admin_token(daemon, scope)}"}


async def new_code(daemon: Daemon, kind: str = "device") -> str:
    """A fresh pairing code straight from the store (as `climbd pair` makes them)."""
    assert daemon.app is not None
    store = await daemon.app[SECURITY].auth_store()
    assert store is not None
    code, _ = await store.create_code(kind, 600, "test")  # type: ignore[arg-type]
    return code


class Agent:
    """One HTTP client with its own cookies (a device, a phone, an attacker).

    Args:
        base: ``http://127.0.0.1:port``.
        csrf: send the CSRF header on state-changing requests (as the web UI does).
        origin: send this ``Origin`` on every request ("self" = the base URL; None = none).
    """

    def __init__(self, base: str, *, csrf: bool = True, origin: str | None = "self",
                 local_addr: tuple[str, int] | None = None):
        self.base = base
        self.csrf = csrf
        self.origin = base if origin == "self" else origin
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []
        self.local_addr = local_addr
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Agent:
        conn = aiohttp.TCPConnector(local_addr=self.local_addr) if self.local_addr else None
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                              connector=conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    def _absorb(self, resp: aiohttp.ClientResponse) -> None:
        for header in resp.headers.getall("Set-Cookie", []):
            self.set_cookie_headers.append(header)
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or (morsel.value == "" and morsel["expires"]):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def raw(self, method: str, path: str, **kw: Any) -> aiohttp.ClientResponse:
        """Send a request; the caller reads (and releases) the response."""
        assert self._session is not None
        headers = dict(kw.pop("headers", None) or {})
        if self.cookies and "Cookie" not in headers:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.origin is not None and "Origin" not in headers:
            headers["Origin"] = self.origin
        if (self.csrf and method not in ("GET", "HEAD", "OPTIONS")
                and "climbd_csrf" in self.cookies and "X-CSRF-Token" not in headers):
            headers["X-CSRF-Token"] = self.cookies["climbd_csrf"]
        resp = await self._session.request(method, self.base + path, headers=headers,
                                           allow_redirects=False, **kw)
        self._absorb(resp)
        return resp

    async def req(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """Send a request: (status, parsed JSON or bytes)."""
        resp = await self.raw(method, path, **kw)
        async with resp:
            if resp.content_type.endswith("json"):
                return resp.status, await resp.json()
            return resp.status, await resp.read()

    async def pair(self, code: str, name: str = "tablet") -> dict[str, Any]:
        status, body = await self.req("POST", "/api/auth/pair",
                                      json={"code": code, "name": name})
        assert status == 201, body
        return dict(body)

    async def setup_admin(self, code: str | None = None,
                          password: str = ADMIN_PASSWORD) -> dict[str, Any]:
        payload: dict[str, Any] = {"password": password}
        if code is not None:
            payload["code"] = code
        status, body = await self.req("POST", "/api/auth/admin/setup", json=payload)
        assert status == 201, body
        return dict(body)

    async def login(self, password: str = ADMIN_PASSWORD) -> dict[str, Any]:
        status, body = await self.req("POST", "/api/auth/admin/login",
                                      json={"password": password})
        assert status == 200, body
        return dict(body)


async def wait_frames(daemon: Daemon, n: int = 40) -> None:
    """Wait until the fake camera has delivered ``n`` encoded frames."""
    import asyncio

    for _ in range(400):
        if daemon.pipeline.encoder.frames >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no frames")
