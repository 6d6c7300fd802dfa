"""The access-control layer over real HTTP (in-process daemon, fake camera, 127.0.0.1).

A client on 127.0.0.1 counts as a LAN client (tablet, phone, attacker): the default
``security.loopback_is_trusted = false``; one test covers the documented opt-in.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from climbd.errors import ConfigError
from climbd.security import crypto
from climbd.security.transport import server_ssl_context
from tests.conftest import REPO
from tests.securitykit import ADMIN_PASSWORD, FAST_SCRYPT, Agent, new_code, secure_daemon

pytestmark = pytest.mark.integration

LAN: dict[str, Any] = {"loopback_is_trusted": False}


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "DEFAULT_SCRYPT", FAST_SCRYPT)


def _cookie_attrs(agent: Agent, name: str) -> str:
    return next(h for h in reversed(agent.set_cookie_headers) if h.startswith(name + "="))


async def test_first_run_pairing_and_admin_setup_from_the_lan(tmp_path: Path,
                                                             media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), Agent(base) as tablet:
        status, me = await tablet.req("GET", "/api/auth/me")
        assert status == 200 and me["role"] == "anonymous" and not me["admin_configured"]
        resp = await tablet.raw("GET", "/api/sessions")
        async with resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await tablet.req("GET", "/api/health"))[0] == 200  # anonymous on purpose

        # a wrong code, then a right one (single use)
        status, body = await tablet.req("POST", "/api/auth/pair",
                                        json={"code": "0000-0000", "name": "x"})
        assert status == 403 and body["error"] == "invalid_code"
        code = await new_code(daemon)
        paired = await tablet.pair(crypto.format_code(code), name="Wall 1")
        assert paired["role"] == "wall" and paired["device"]["name"] == "Wall 1"
        attrs = _cookie_attrs(tablet, "climbd_device").lower()
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
        assert "max-age=34560000" in attrs and "secure" not in attrs
        csrf = _cookie_attrs(tablet, "climbd_csrf").lower()
        assert "httponly" not in csrf and "samesite=strict" in csrf
        assert paired["csrf_token"] == tablet.cookies["climbd_csrf"]
        assert (await tablet.req("GET", "/api/sessions"))[0] == 200
        async with Agent(base) as other:
            status, _ = await other.req("POST", "/api/auth/pair", json={"code": code})
            assert status == 403  # used up

        # the admin password needs a code from the LAN
        status, body = await tablet.req("POST", "/api/auth/admin/setup",
                                        json={"password": ADMIN_PASSWORD})
        assert status == 403 and body["error"] == "code_required"
        status, body = await tablet.req("POST", "/api/auth/admin/setup",
                                        json={"password": "short", "code": "1"})
        assert status == 422 and body["error"] == "weak_password"
        assert (await tablet.req("GET", "/api/auth/devices"))[0] == 403  # wall, not admin
        me = await tablet.setup_admin(code=await new_code(daemon, "admin"))
        assert me["role"] == "admin" and me["device"]["name"] == "Wall 1"
        assert "httponly" in _cookie_attrs(tablet, "climbd_admin").lower()
        status, devices = await tablet.req("GET", "/api/auth/devices")
        assert status == 200 and [d["current"] for d in devices["items"]] == [True]

        # log out, wrong password, right password
        assert (await tablet.req("POST", "/api/auth/logout"))[0] == 200
        assert "climbd_admin" not in tablet.cookies
        assert (await tablet.req("GET", "/api/auth/devices"))[0] == 403
        status, body = await tablet.req("POST", "/api/auth/admin/login",
                                        json={"password": "wrong password"})
        assert status == 403 and body["error"] == "invalid_password"
        await tablet.login()
        assert (await tablet.req("GET", "/api/auth/devices"))[0] == 200
        store = await daemon.app[__import__("climbd.api.security", fromlist=["x"])
                                 .SECURITY].auth_store()  # type: ignore[index]
        assert store is not None and store.admin_password_hash.startswith("scrypt$")


async def test_loopback_trust_opt_in_is_local_same_origin_only(tmp_path: Path,
                                                             media: Path) -> None:
    async with secure_daemon(tmp_path, loopback_is_trusted=True) as (daemon, base):
        async with Agent(base, origin=None) as local:
            status, me = await local.req("GET", "/api/auth/me")
            assert me["role"] == "admin" and me["via"] == "loopback"
            assert (await local.req("GET", "/api/sessions"))[0] == 200
            status, _ = await local.req("GET", "/api/sessions",
                                        headers={"Host": f"localhost:{daemon.port}"})
            assert status == 200
            # even trusted, the admin password needs a code (or the admin socket)
            status, body = await local.req("POST", "/api/auth/admin/setup",
                                           json={"password": ADMIN_PASSWORD})
            assert status == 403 and body["error"] == "code_required", body
            # a request that came through a proxy (forwarding headers) is never trusted
            status, _ = await local.req("GET", "/api/sessions",
                                        headers={"X-Forwarded-For": "192.168.1.50"})
            assert status == 401
            # a LAN name (not loopback) is not trusted even from 127.0.0.1
            status, _ = await local.req("GET", "/api/sessions",
                                        headers={"Host": f"192.168.7.7:{daemon.port}"})
            assert status == 401
            # DNS rebinding: a foreign host name is refused outright
            status, body = await local.req("GET", "/api/health",
                                           headers={"Host": "evil.example"})
            assert status == 421 and body["error"] == "misdirected_request"
            status, _ = await local.req("GET", "/", headers={"Host": "127.0.0.1.evil.example"})
            assert status == 421
        # a page of another origin in a browser on the appliance gets nothing
        async with Agent(base, origin="http://evil.example") as page:
            status, me = await page.req("GET", "/api/auth/me")
            assert me["role"] == "anonymous"
            status, body = await page.req("POST", "/api/recordings/start", json={})
            assert status == 403 and body["error"] == "cross_origin"
            status, _ = await page.req("POST", "/api/recordings/start", json={},
                                       headers={"Origin": "null"})
            assert status == 403
        async with Agent(base, origin=None) as page:
            status, _ = await page.req("POST", "/api/recordings/stop",
                                       headers={"Sec-Fetch-Site": "cross-site"})
            assert status == 403
            status, _ = await page.req("POST", "/api/recordings/stop",
                                       headers={"Referer": "http://evil.example/x"})
            assert status == 403


async def test_csrf_and_origin_checks_for_cookie_requests(tmp_path: Path,
                                                          media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), Agent(base) as tablet:
        await tablet.pair(await new_code(daemon))
        path = "/api/auth/pairing-codes"
        status, body = await tablet.req("POST", path, headers={"X-CSRF-Token": ""})
        assert status == 403 and body["error"] == "csrf_token"
        status, _ = await tablet.req("POST", path,
                                     headers={"X-CSRF-Token": crypto.csrf_token("guess")})
        assert status == 403
        status, body = await tablet.req("POST", path)
        assert status == 201 and len(body["code"]) == 9
        status, body = await tablet.req("POST", path, headers={"Origin": "http://evil.example"})
        assert status == 403 and body["error"] == "cross_origin"
        status, body = await tablet.req(
            "POST", path, headers={"Origin": f"http://127.0.0.1:{(daemon.port or 0) + 1}"})
        assert status == 403  # another port is another origin
        status, _ = await tablet.req("POST", path, headers={"Origin": base.replace("http:",
                                                                                   "https:")})
        assert status == 403
        # reading is fine cross-origin (the browser hides the answer: no CORS)
        status, _ = await tablet.req("GET", "/api/sessions",
                                     headers={"Origin": "http://evil.example"})
        assert status == 200
        # WebSocket handshakes: Origin is checked before the handler runs
        status, body = await tablet.req("GET", "/api/live", headers={
            "Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert status == 403 and body["error"] == "cross_origin"


async def _wait_frames(daemon: Any, n: int = 40) -> None:
    for _ in range(200):
        if daemon.pipeline.encoder.frames >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no frames")


async def test_api_tokens_trigger_recordings_and_nothing_else(tmp_path: Path,
                                                              media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), Agent(base) as admin:
        await admin.setup_admin(code=await new_code(daemon, "admin"))
        status, tok = await admin.req("POST", "/api/auth/tokens", json={"name": "big button"})
        assert status == 201 and tok["token"].startswith("climbd_")
        status, listed = await admin.req("GET", "/api/auth/tokens")
        assert "token" not in listed["items"][0] and listed["items"][0]["name"] == "big button"
        await _wait_frames(daemon)
        async with Agent(base, origin=None) as button:
            auth = {"Authorization": f"Bearer {tok['token']}"}
            status, s = await button.req("POST", "/api/recordings/save-last",
                                         json={"seconds": 1}, headers=auth)
            assert status == 201, s
            assert (await button.req("GET", "/api/recordings/current", headers=auth))[0] == 200
            for method, path in (("GET", "/api/sessions"), ("GET", f"/api/sessions/{s['id']}"),
                                 ("DELETE", f"/api/sessions/{s['id']}"),
                                 ("GET", "/api/auth/tokens")):
                status, body = await button.req(method, path, headers=auth)
                assert status == 403, (method, path, body)
            resp = await button.raw("GET", "/api/recordings/current",
                                    headers={"Authorization": "Bearer climbd_nope"})
            async with resp:
                assert resp.status == 401
                assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
            status, _ = await button.req("GET", "/api/recordings/current",
                                         headers={"Authorization": "Basic YTpi"})
            assert status == 401
            assert (await admin.req("DELETE", f"/api/auth/tokens/{tok['id']}"))[0] == 200
            assert (await button.req("GET", "/api/recordings/current", headers=auth))[0] == 401


async def test_admin_unpairs_a_device_and_its_cookie_dies(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), \
            Agent(base) as admin, Agent(base) as tablet:
        await admin.setup_admin(code=await new_code(daemon, "admin"))
        dev = (await tablet.pair(await new_code(daemon), name="lost tablet"))["device"]
        assert (await tablet.req("GET", "/api/sessions"))[0] == 200
        status, renamed = await admin.req("PATCH", f"/api/auth/devices/{dev['id']}",
                                          json={"name": "Wall 2"})
        assert status == 200 and renamed["name"] == "Wall 2"
        assert (await admin.req("DELETE", f"/api/auth/devices/{dev['id']}"))[0] == 200
        assert (await admin.req("DELETE", f"/api/auth/devices/{dev['id']}"))[0] == 404
        assert (await tablet.req("GET", "/api/sessions"))[0] == 401
        assert "climbd_device" not in tablet.cookies  # the stale cookie was deleted
        # a device can unpair itself
        await tablet.pair(await new_code(daemon))
        assert (await tablet.req("POST", "/api/auth/unpair"))[0] == 200
        assert (await tablet.req("GET", "/api/sessions"))[0] == 401


async def test_guessing_pairing_codes_is_rate_limited(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN, auth_attempts_per_min=5,
                             auth_attempts_global_per_min=8) as (daemon, base):
        code = await new_code(daemon)
        async with Agent(base, local_addr=("127.0.0.2", 0)) as a, \
                Agent(base, local_addr=("127.0.0.3", 0)) as b:
            statuses = [(await a.req("POST", "/api/auth/pair", json={"code": f"{i:08d}"}))[0]
                        for i in range(6)]
            assert statuses == [403] * 5 + [429]
            resp = await a.raw("POST", "/api/auth/pair", json={"code": code})
            async with resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            # the global budget (8) is shared: b gets 3 guesses, then waits too
            statuses = [(await b.req("POST", "/api/auth/pair", json={"code": f"{i:08d}"}))[0]
                        for i in range(4)]
            assert statuses == [403, 403, 403, 429]
            status, _ = await a.req("POST", "/api/auth/admin/login", json={"password": "x" * 8})
            assert status in (409, 429)  # no admin yet (409) or limited (429): never a check


async def test_security_headers_and_a_csp_without_unsafe_inline(tmp_path: Path,
                                                                media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), Agent(base) as phone:
        for path in ("/", "/pair", "/api/health", "/api/nothing", "/ui/js/live.js"):
            resp = await phone.raw("GET", path)
            async with resp:
                h = resp.headers
                csp = h["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
                assert "script-src 'self'" in csp and f"ws://127.0.0.1:{daemon.port}" in csp
                assert h["X-Content-Type-Options"] == "nosniff"
                assert h["X-Frame-Options"] == "DENY"
                assert h["Referrer-Policy"] == "same-origin"
                if path.startswith("/api"):
                    assert h["Cache-Control"] == "no-store"


def test_web_pages_need_no_inline_script_or_style() -> None:
    """The CSP forbids inline code, so no page of the UI may rely on it."""
    import re

    pages = [*(REPO / "webui").rglob("*.html"),
             *(REPO / "climbd" / "security" / "static").glob("*.html")]
    assert pages
    for page in pages:
        text = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text, re.I), page
        assert not re.search(r"\son[a-z]+\s*=|javascript:", text, re.I), page
        if page.parent.name == "share":
            # the phone's share page runs no script at all (its own CSP: default-src 'none';
            # an inline <style> is its only exception, see THREAT_MODEL.md)
            assert "<script" not in text.lower(), page
            continue
        assert not re.search(r"<style\b|\sstyle\s*=", text, re.I), page


async def test_climbd_pair_cli_makes_a_code_the_daemon_accepts(tmp_path: Path,
                                                              media: Path) -> None:
    async with secure_daemon(tmp_path, **LAN) as (daemon, base), Agent(base) as tablet:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "climbd", "pair", "--state-dir", str(daemon.state_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        code = out.decode().strip()
        assert len(code) == 14 and code[4] == code[9] == "-" and b"valid 10 min" in err
        await tablet.pair(code)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "climbd", "pair", "--admin", "--state-dir",
            str(daemon.state_dir), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=REPO)
        out, _ = await proc.communicate()
        me = await tablet.setup_admin(code=out.decode().strip())
        assert me["role"] == "admin"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "climbwall.local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_with_a_configured_certificate_and_secure_cookies(
        tmp_path: Path, media: Path) -> None:
    from climbd.config import Config
    from climbd.daemon import Daemon
    from tests.conftest import SHORT
    from tests.fakes import CameraRig
    from tests.securitykit import config as make_config

    cert, key = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match="together"):
        server_ssl_context(str(cert), "")
    with pytest.raises(ConfigError, match="cannot load"):
        server_ssl_context(str(cert), str(tmp_path / "missing.pem"))
    data = make_config(**LAN).model_dump()
    data["server"].update(tls_cert=str(cert), tls_key=str(key))
    daemon = Daemon(Config.model_validate(data), tmp_path / "state",
                    source_factory=CameraRig(SHORT, fps=30).open)
    await daemon.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            async with s.post(base + "/api/auth/pair", ssl=client_ctx, headers={"Origin": base},
                              json={"code": await new_code(daemon)}) as r:
                assert r.status == 201
                cookies = r.headers.getall("Set-Cookie")
            assert all("secure" in c.lower() for c in cookies)
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{daemon.port}/api/health") as r:
                    await r.read()
    finally:
        await daemon.stop()
