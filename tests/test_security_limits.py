"""Issue 14, finding 7: deeply nested JSON, chunked bodies, non-ASCII ids, the OpenAPI
document per request, and the export queued behind another device's export. In-process
daemon on 127.0.0.1 with a fake camera.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from climbd.api import openapi
from climbd.security import crypto, jsonsafe
from tests.securitykit import (
    FAST_SCRYPT,
    Agent,
    admin_headers,
    new_code,
    secure_daemon,
    wait_frames,
)

pytestmark = pytest.mark.integration

ROOMY: dict[str, Any] = {"api_burst": 10_000, "signalling_burst": 1000,
                         "signalling_per_min": 1e5}
DEEP = "[" * 2000


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "DEFAULT_SCRYPT", FAST_SCRYPT)


def test_jsonsafe_refuses_deep_nesting_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        jsonsafe.loads(DEEP)
    with pytest.raises(ValueError):
        jsonsafe.loads("{" * 100_000)
    assert jsonsafe.loads('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {
        "a": "[" * 44}
    assert jsonsafe.loads(b'[[1], {"x": [2]}]') == [[1], {"x": [2]}]


async def test_deeply_nested_json_is_a_400_on_http_and_an_error_message_on_the_websocket(
        tmp_path: Path, media: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), Agent(base) as tablet:
        await wait_frames(daemon)
        await tablet.pair(await new_code(daemon))
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for path in ("/api/recordings/start", "/api/auth/pair"):
                for _ in range(20):
                    status, body = await tablet.req(
                        "POST", path, data=DEEP, headers={"Content-Type": "application/json"})
                    assert status == 400, (path, body)
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in tablet.cookies.items()),
                       "Origin": base}
            assert tablet._session is not None
            async with tablet._session.ws_connect(base.replace("http", "ws") + "/api/live",
                                                  headers=headers) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
                await ws.send_str(DEEP)
                while True:
                    msg = await ws.receive_json(timeout=5)
                    if msg["type"] == "error":
                        break
                assert msg["code"] == "bad-json", msg
                await ws.send_json({"type": "ping", "id": 1})
                while (msg := await ws.receive_json(timeout=5))["type"] != "pong":
                    pass
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        assert len(caplog.records) < 20  # not one traceback per request


async def test_the_auth_body_limit_counts_chunked_bodies(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (_daemon, base), Agent(base) as client:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"code": "12345678", "name": "'
            for _ in range(64):
                yield b"x" * 1024
            yield b'"}'

        status, body = await client.req("POST", "/api/auth/pair", data=chunks(),
                                        headers={"Content-Type": "application/json"})
        assert status == 413, body


async def test_ids_with_non_ascii_digits_are_not_found(tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, **ROOMY) as (daemon, base), \
            aiohttp.ClientSession(headers=await admin_headers(daemon)) as s:
        for path in ("/api/sessions/%C2%B2", "/api/sessions/%D9%A3/privacy",
                     "/api/exports/%C2%B2", "/api/auth/devices/%C2%B2",
                     "/api/auth/tokens/%C2%B2"):
            method = "DELETE" if "/auth/" in path else "GET"
            async with s.request(method, base + path) as r:
                assert r.status == 404, (path, r.status, await r.text())


async def test_the_openapi_document_is_built_once(tmp_path: Path, media: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = openapi.build_document

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(openapi, "build_document", counting)
    async with secure_daemon(tmp_path, **ROOMY) as (_daemon, base), \
            aiohttp.ClientSession() as s:
        bodies = []
        for _ in range(10):
            async with s.get(base + "/api/openapi.json") as r:
                assert r.status == 200
                bodies.append(await r.read())
        assert len(calls) == 1 and len(set(bodies)) == 1
        assert b'"openapi"' in bodies[0]


async def test_an_export_queued_behind_another_devices_export_runs(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, sections={"export": {"max_concurrent": 1}},
                             **ROOMY) as (daemon, base), Agent(base) as a, Agent(base) as b:
        await wait_frames(daemon, 60)
        await a.pair(await new_code(daemon), "A")
        await b.pair(await new_code(daemon), "B")
        status, rec_a = await a.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        assert status == 201
        status, rec_b = await b.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        assert status == 201
        assert (await b.req("PUT", f"/api/sessions/{rec_b['id']}/privacy",
                            json={"private": True}))[0] == 200
        status, exp_a = await a.req("POST", f"/api/sessions/{rec_a['id']}/exports",
                                    json={"kind": "overlay"})
        assert status in (201, 202), exp_a
        status, exp_b = await b.req("POST", f"/api/sessions/{rec_b['id']}/exports",
                                    json={"kind": "overlay"})
        assert status in (201, 202), exp_b
        assert daemon.exports is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, got = await b.req("GET", f"/api/exports/{exp_b['id']}")
            if got["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
        assert got["status"] == "done", got
