"""Issue 14: nobody is trusted by address; owners for every recording; separate attempt
budgets; anonymous health; unpairing cuts a device off. In-process daemon on 127.0.0.1,
fake camera, real HTTP, WebSockets and aiortc peers on loopback.

Each test reproduces a numbered finding of the review (it fails on the code before the fix).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from climbd.api.security import SECURITY, forwarded_client
from climbd.security import crypto
from climbd.security.local import AdminClient
from climbd.visibility import SYSTEM, viewing
from tests.securitykit import (
    ADMIN_PASSWORD,
    FAST_SCRYPT,
    Agent,
    admin_headers,
    new_code,
    secure_daemon,
    wait_frames,
)
from tests.whep_viewer import Viewer

pytestmark = pytest.mark.integration

#: rate limits out of the way where a test is not about them
ROOMY: dict[str, Any] = {"api_burst": 10_000, "signalling_burst": 1000,
                         "signalling_per_min": 1e5}


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "DEFAULT_SCRYPT", FAST_SCRYPT)


def _admin(daemon: Any) -> AdminClient:
    return AdminClient(daemon.state_dir / "admin.sock")


async def _proxy(target: str) -> tuple[web.AppRunner, str]:
    """A reverse proxy on 127.0.0.1 like nginx's default ``proxy_pass http://127.0.0.1:port``:
    forwards method, path, body and headers, with ``Host`` set to the upstream."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        headers["Host"] = target.split("//", 1)[1]
        async with session.request(request.method, target + request.path_qs,
                                   headers=headers, data=await request.read(),
                                   allow_redirects=False) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding",
                                        "content-encoding")}
            return web.Response(status=r.status, body=body, headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)

    async def close_session(_: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close_session)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


# -- finding 1: loopback = admin ----------------------------------------------------------
async def test_a_local_request_without_credentials_is_anonymous(tmp_path: Path,
                                                                media: Path) -> None:
    async with secure_daemon(tmp_path) as (daemon, base):
        await wait_frames(daemon)
        headers = await admin_headers(daemon)
        async with Agent(base, origin=None) as admin:
            status, rec = await admin.req("POST", "/api/recordings/save-last",
                                          json={"seconds": 1}, headers=headers)
            assert status == 201, rec
        async with Agent(base, origin=None) as local:  # curl on the appliance
            status, me = await local.req("GET", "/api/auth/me")
            assert (me["role"], me["via"]) == ("anonymous", "none")
            for method, path, body in (
                    ("POST", "/api/recordings/start", {}),
                    ("POST", "/api/recordings/save-last", {"seconds": 1}),
                    ("PATCH", f"/api/sessions/{rec['id']}", {"name": "mine now"}),
                    ("DELETE", f"/api/sessions/{rec['id']}", None),
                    ("GET", "/api/sessions", None),
                    ("POST", "/api/auth/tokens", {"name": "x"})):
                status, _ = await local.req(method, path, json=body)
                assert status == 401, (method, path, status)
            status, body = await local.req("POST", "/api/auth/admin/setup",
                                           json={"password": ADMIN_PASSWORD})
            assert status == 403 and body["error"] == "code_required"
        with viewing(SYSTEM):
            assert (await daemon.db.get_session(rec["id"])).name == rec["name"]


async def test_a_reverse_proxy_on_the_box_gives_lan_clients_nothing(tmp_path: Path,
                                                                    media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base):
        await wait_frames(daemon)
        headers = await admin_headers(daemon)
        async with Agent(base, origin=None) as admin:
            status, rec = await admin.req("POST", "/api/recordings/save-last",
                                          json={"seconds": 1}, headers=headers)
            assert status == 201
            status, _ = await admin.req("PUT", f"/api/sessions/{rec['id']}/privacy",
                                        json={"private": True}, headers=headers)
            assert status == 200
        runner, proxied = await _proxy(base)
        try:
            async with Agent(proxied, origin=None) as lan:  # a phone behind the proxy
                status, me = await lan.req("GET", "/api/auth/me")
                assert status == 200 and me["role"] == "anonymous", me
                assert (await lan.req("GET", f"/api/sessions/{rec['id']}/video"))[0] == 401
                assert (await lan.req("POST", "/api/auth/tokens", json={"name": "t"}))[0] == 401
                status, body = await lan.req("PUT", "/api/auth/admin/password",
                                             json={"new": "another password"})
                assert status == 401, body
                status, health = await lan.req("GET", "/api/health")
                assert set(health) == {"status", "reasons"}
        finally:
            await runner.cleanup()


def test_x_forwarded_for_counts_only_from_a_configured_proxy() -> None:
    from ipaddress import ip_network

    proxies = (ip_network("127.0.0.1/32"),)
    assert forwarded_client("127.0.0.1", "10.0.0.9, 192.168.1.20", proxies) == "192.168.1.20"
    assert forwarded_client("127.0.0.1", "192.168.1.20, 127.0.0.1", proxies) == "192.168.1.20"
    assert forwarded_client("192.168.1.5", "10.0.0.1", proxies) is None  # not a proxy
    assert forwarded_client("127.0.0.1", "not an address", proxies) is None
    assert forwarded_client("127.0.0.1", "10.0.0.1", ()) is None  # none configured


async def test_rate_limits_key_on_the_proxied_client_when_the_proxy_is_trusted(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, trusted_proxies=["127.0.0.1"],
                             auth_attempts_per_min=2) as (_daemon, base), \
            Agent(base) as proxy:
        for client in ("192.168.1.20", "192.168.1.20", "192.168.1.21"):
            status, _ = await proxy.req("POST", "/api/auth/pair", json={"code": "0" * 8},
                                        headers={"X-Forwarded-For": client})
            assert status == 403
        status, _ = await proxy.req("POST", "/api/auth/pair", json={"code": "0" * 8},
                                    headers={"X-Forwarded-For": "192.168.1.20"})
        assert status == 429  # .20 spent its 2, .21 had its own budget


@pytest.mark.system
async def test_another_local_uid_is_anonymous_and_cannot_use_the_admin_socket(
        tmp_path: Path, media: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as nobody")
    import shutil
    import tempfile

    # pytest's tmp dirs are under a 0700 directory; the other uid must be able to reach the
    # state directory's parent, as on the appliance (/var/lib)
    root = Path(tempfile.mkdtemp(prefix="climbd-uid-", dir="/tmp"))
    root.chmod(0o755)
    try:
        await _other_uid(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _other_uid(tmp_path: Path) -> None:
    import os

    async with secure_daemon(tmp_path) as (daemon, base):
        sock = daemon.state_dir / "admin.sock"
        assert (sock.stat().st_mode & 0o777) == 0o600
        script = f"""
import json, os, socket, sys, urllib.request, urllib.error
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from climbd.security.local import AdminClient, AdminSocketError
out = {{"uid": os.geteuid()}}
try:
    AdminClient({str(sock)!r}).create_token("x", "admin")
    out["socket"] = "allowed"
except AdminSocketError as exc:
    out["socket"] = exc.status
def req(method, path, body=None):
    r = urllib.request.Request({base!r} + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={{"Content-Type": "application/json"}})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
out["me"] = req("GET", "/api/auth/me")[1]["role"]
out["setup"] = req("POST", "/api/auth/admin/setup", {{"password": "pwned by nobody"}})[0]
out["reset"] = req("PUT", "/api/auth/admin/password", {{"new": "pwned by nobody"}})[0]
out["token"] = req("POST", "/api/auth/tokens", {{"name": "x"}})[0]
print(json.dumps(out))
"""
        def as_nobody() -> None:
            os.setgid(65534)
            os.setuid(65534)

        # the venv's interpreter lives under /root (0700): use the system one, as a local
        # user would (the client module is standard library only)
        python = "/usr/bin/python3"
        if not Path(python).exists():
            pytest.skip("no system python3 for the other uid")

        async def run() -> dict[str, Any]:
            proc = await asyncio.create_subprocess_exec(
                python, "-c", script, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, preexec_fn=as_nobody, cwd="/")
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            return dict(json.loads(out))

        got = await run()
        assert got["uid"] == 65534
        assert got["socket"] == 0  # the 0600 file: cannot even connect
        assert (got["me"], got["setup"], got["reset"], got["token"]) == (
            "anonymous", 403, 401, 401), got
        # a mistake in the permissions: SO_PEERCRED still refuses
        mode = daemon.state_dir.stat().st_mode & 0o777
        daemon.state_dir.chmod(0o755)
        sock.chmod(0o666)
        try:
            assert (await run())["socket"] == 403
        finally:
            sock.chmod(0o600)
            daemon.state_dir.chmod(mode)
        store = await daemon.app[SECURITY].auth_store()
        assert store is not None and not store.admin_configured and not store.tokens()


# -- finding 3: admin lock-out ------------------------------------------------------------
async def test_admin_login_and_a_cli_code_work_during_a_pairing_code_flood(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path) as (daemon, base):
        await asyncio.to_thread(_admin(daemon).set_admin_password, ADMIN_PASSWORD)
        refused = 0
        for i in range(40):  # wrong codes from 20 rotating addresses, 2 each
            async with Agent(base, local_addr=(f"127.0.0.{10 + i % 20}", 0)) as attacker:
                status, _ = await attacker.req("POST", "/api/auth/pair",
                                               json={"code": f"{i:08d}"})
                refused += status == 429
        assert refused > 0  # the global pairing budget is spent
        async with Agent(base, local_addr=("127.0.0.99", 0)) as attacker:
            status, _ = await attacker.req("POST", "/api/auth/pair", json={"code": "12345678"})
            assert status == 429
        async with Agent(base, local_addr=("127.0.0.2", 0)) as owner:
            me = await owner.login()  # not 429
            assert me["role"] == "admin"
        cli = await asyncio.to_thread(_admin(daemon).pairing_code, "device")
        assert len(cli["code"]) == 14
        async with Agent(base, local_addr=("127.0.0.3", 0)) as tablet:
            assert (await tablet.pair(cli["code"]))["role"] == "wall"


# -- finding 4: owners --------------------------------------------------------------------
async def test_a_recording_belongs_to_who_started_it(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), \
            Agent(base) as a, Agent(base) as b, Agent(base) as admin:
        await wait_frames(daemon)
        a_id = (await a.pair(await new_code(daemon), "A"))["device"]["id"]
        await b.pair(await new_code(daemon), "B")
        status, rec = await a.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        assert status == 201
        sid = rec["id"]
        # B cannot take A's recording, nor make it private
        status, body = await b.req("PUT", f"/api/sessions/{sid}/privacy",
                                   json={"private": True})
        assert status == 403, body
        assert (await b.req("GET", f"/api/sessions/{sid}"))[0] == 200
        status, body = await a.req("PUT", f"/api/sessions/{sid}/privacy",
                                   json={"private": True})
        assert status == 200 and body["owner_device_id"] == a_id, body
        assert (await a.req("GET", f"/api/sessions/{sid}"))[0] == 200
        assert (await b.req("GET", f"/api/sessions/{sid}"))[0] == 404
        # a recording of the box (GPIO, hands-free): only the admin changes its privacy
        with viewing(SYSTEM):
            box = await daemon.recorder.save_last(1.0)
        status, _ = await a.req("PUT", f"/api/sessions/{box.id}/privacy",
                                json={"private": True})
        assert status == 403
        # one started by an API token belongs to the token: devices cannot claim it
        trigger = (await admin_headers(daemon, "trigger"))
        async with Agent(base, origin=None) as button:
            status, tok_rec = await button.req("POST", "/api/recordings/save-last",
                                               json={"seconds": 1}, headers=trigger)
            assert status == 201
        with viewing(SYSTEM):
            assert (await daemon.db.get_session(tok_rec["id"])).owner_token_id is not None
        status, _ = await b.req("PUT", f"/api/sessions/{tok_rec['id']}/privacy",
                                json={"private": True})
        assert status == 403
        # the admin may
        await asyncio.to_thread(_admin(daemon).set_admin_password, ADMIN_PASSWORD)
        await admin.login()
        for s in (box.id, tok_rec["id"]):
            status, _ = await admin.req("PUT", f"/api/sessions/{s}/privacy",
                                        json={"private": True})
            assert status == 200


async def test_stopping_someone_elses_private_recording_reveals_nothing(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), \
            Agent(base) as a, Agent(base) as b:
        await wait_frames(daemon)
        await a.pair(await new_code(daemon), "A")
        await b.pair(await new_code(daemon), "B")
        status, rec = await a.req("POST", "/api/recordings/start",
                                  json={"name": "secret project"})
        assert status == 201
        assert (await a.req("PUT", f"/api/sessions/{rec['id']}/privacy",
                            json={"private": True}))[0] == 200
        status, cur = await b.req("GET", "/api/recordings/current")
        assert status == 200 and cur["state"] == "recording" and cur["name"] is None
        status, stopped = await b.req("POST", "/api/recordings/stop")
        assert status == 200 and "secret project" not in json.dumps(stopped)
        assert stopped["id"] == rec["id"]


# -- finding 5: anonymous health ----------------------------------------------------------
async def test_anonymous_health_leaks_nothing(tmp_path: Path, media: Path) -> None:
    camera = "rtsp://admin:hunter2@192.0.2.30:554/stream1"
    async with secure_daemon(tmp_path, sections={"capture": {
            "source": camera, "retry_initial_s": 0.05, "retry_max_s": 0.2}},
            **ROOMY) as (daemon, base), Agent(base) as tablet, Agent(base) as stranger:
        await wait_frames(daemon)
        await tablet.pair(await new_code(daemon))
        status, rec = await tablet.req("POST", "/api/recordings/start",
                                       json={"name": "private climb 42"})
        assert status == 201
        await tablet.req("PUT", f"/api/sessions/{rec['id']}/privacy", json={"private": True})
        status, health = await stranger.req("GET", "/api/health")
        assert status == 200
        text = json.dumps(health)
        for leak in ("hunter2", "admin:", "192.0.2.30", str(daemon.state_dir), "private climb",
                     "recent_deletions", "state_dir"):
            assert leak not in text, (leak, health)
        assert health["status"] in ("ok", "degraded") and isinstance(health["reasons"], list)
        # with a role, the details are there, still without the password
        status, full = await tablet.req("GET", "/api/health")
        assert "capture" in full and "hunter2" not in json.dumps(full)
        await tablet.req("POST", "/api/recordings/stop")


# -- finding 6: unpairing cuts a device off -----------------------------------------------
async def _ws(agent: Agent, base: str) -> aiohttp.ClientWebSocketResponse:
    session = agent._session
    assert session is not None
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in agent.cookies.items()),
               "Origin": base}
    return await session.ws_connect(base.replace("http", "ws") + "/api/live",
                                    headers=headers)


async def test_unpair_closes_a_live_websocket_and_whep_peer_within_1s(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), Agent(base) as tablet:
        await wait_frames(daemon)
        me = await tablet.pair(await new_code(daemon))
        ws = await _ws(tablet, base)
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        viewer = Viewer(decode=False)
        try:
            status, answer = await tablet.req("POST", "/api/whep", data=await viewer.offer(),
                                              headers={"Content-Type": "application/sdp"})
            assert status == 201, answer
            await viewer.accept(answer.decode() if isinstance(answer, bytes) else answer)
            assert await viewer.wait_for(lambda: viewer.frames >= 3, 20)
            assert daemon.live is not None and daemon.live.viewers == 1
            t0 = time.monotonic()
            await asyncio.to_thread(_admin(daemon).remove_device, me["device"]["id"])
            ended = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                     aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR)
            while True:  # messages sent before the cut may still be queued: read them
                left = 1.0 - (time.monotonic() - t0)
                msg = await ws.receive(timeout=max(left, 0.01))
                if msg.type in ended:
                    break
            assert await viewer.wait_for(lambda: daemon.live.viewers == 0,
                                         1.0 - (time.monotonic() - t0))
            assert time.monotonic() - t0 < 1.0
            # and its cookie no longer opens anything
            status, _ = await tablet.req("POST", "/api/recordings/start", json={})
            assert status == 401
        finally:
            await ws.close()
            await viewer.close()


async def test_one_device_cannot_hold_every_live_slot(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, max_websockets_per_device=2, max_viewers_per_device=1,
                             **ROOMY) as (daemon, base), \
            Agent(base) as greedy, Agent(base) as other:
        await wait_frames(daemon)
        await greedy.pair(await new_code(daemon))
        await other.pair(await new_code(daemon))
        sockets = [await _ws(greedy, base) for _ in range(2)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await _ws(greedy, base)
            assert refused.value.status == 429
            mine = await _ws(other, base)
            assert (await mine.receive_json(timeout=5))["type"] == "hello"
            await mine.close()
            viewers = [Viewer(decode=False), Viewer(decode=False)]
            status, _ = await greedy.req("POST", "/api/whep", data=await viewers[0].offer(),
                                         headers={"Content-Type": "application/sdp"})
            assert status == 201
            status, body = await greedy.req("POST", "/api/whep",
                                            data=await viewers[1].offer(),
                                            headers={"Content-Type": "application/sdp"})
            assert status == 429, body
            for v in viewers:
                await v.close()
        finally:
            for s in sockets:
                await s.close()


async def test_climbd_token_and_admin_password_cli_use_the_admin_socket(
        tmp_path: Path, media: Path) -> None:
    import sys

    from tests.conftest import REPO

    async def cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "climbd", *args, "--state-dir", str(daemon.state_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=REPO)
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), Agent(base) as admin:
        code, secret, err = await cli("token", "create", "--scope", "viewer", "--name", "tv")
        assert code == 0 and secret.strip().startswith("climbd_"), err
        async with Agent(base, origin=None) as tv:
            headers = {"Authorization": f"Bearer {secret.strip()}"}
            status, me = await tv.req("GET", "/api/auth/me", headers=headers)
            assert (me["role"], me["scope"]) == ("wall", "viewer")
            assert (await tv.req("GET", "/api/sessions", headers=headers))[0] == 200
            status, _ = await tv.req("POST", "/api/recordings/start", json={},
                                     headers=headers)
            assert status == 403  # viewer: read and watch, no triggers
            code, listing, _ = await cli("token", "list")
            token_id = int(listing.split()[0])
            assert code == 0 and "viewer" in listing and "tv" in listing
            assert (await cli("token", "revoke", str(token_id)))[0] == 0
            assert (await tv.req("GET", "/api/auth/me", headers=headers))[0] == 401
        code, _, err = await cli("admin-password", stdin=b"a brand new password\n")
        assert code == 0, err
        assert (await admin.login("a brand new password"))["role"] == "admin"
