"""Share links: a fresh browser opens the clip without pairing; expiry, revocation and
scope are enforced; the QR code encodes the link; the token is never stored.

The browser is headless Chromium (Debian package) driven by Python Playwright, talking to
the in-process daemon on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from climbd import lan, share
from tests.conftest import async_wait_until
from tests.export_support import Client, copy_template, start_daemon

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            yield b
        finally:
            await b.close()


async def _done_export(c: Client, kind: str, **body: Any) -> dict[str, Any]:
    status, e = await c.req("POST", "/api/sessions/1/exports", json={"kind": kind, **body})
    assert status == 202, e
    e = await c.wait_export(e["id"])
    assert e["status"] == "done", e
    return e


async def _share(c: Client, export_id: int, **body: Any) -> dict[str, Any]:
    """A new share; ``url``/``qr_svg_url`` name the LAN address (as the phone gets them),
    ``local``/``local_qr`` the same paths on the test's loopback base (the tests never send
    to the machine's real interface)."""
    status, s = await c.req("POST", f"/api/exports/{export_id}/share", json=body)
    assert status == 201, s
    assert not lan.is_loopback_host(urlsplit(s["url"]).hostname or ""), s["url"]
    return {**s, "local": c.base + urlsplit(s["url"]).path,
            "local_qr": c.base + urlsplit(s["qr_svg_url"]).path}


async def test_share_link_plays_in_a_fresh_browser(tmp_path: Path, media: Path,
                                                   browser: Any) -> None:
    state = copy_template(tmp_path / "state")
    async with start_daemon(state) as (c, daemon):
        e = await _done_export(c, "overlay")
        s = await _share(c, e["id"])
        assert urlsplit(s["url"]).hostname == lan.lan_host()
        assert urlsplit(s["url"]).port == urlsplit(c.base).port
        assert urlsplit(s["url"]).path.startswith("/s/")
        assert s["qr_svg_url"] == s["url"] + "/qr.svg"
        assert s["expires_at"] == pytest.approx(time.time() + 86400, abs=60)
        token = s["url"].rsplit("/", 1)[1]

        context = await browser.new_context()  # no cookies, no storage: a stranger's phone
        page = await context.new_page()
        response = await page.goto(s["local"])
        assert response is not None and response.status == 200
        assert response.headers["referrer-policy"] == "no-referrer"
        await page.wait_for_function(
            "() => { const v = document.querySelector('video');"
            " return v && v.readyState >= 2 && v.videoWidth > 0; }", timeout=30_000)
        width, height, duration = await page.evaluate(
            "() => { const v = document.querySelector('video');"
            " return [v.videoWidth, v.videoHeight, v.duration]; }")
        assert (width, height) == (404, 720)
        assert duration == pytest.approx(e["actual_end_s"] - e["actual_start_s"], abs=0.05)
        href = await page.get_attribute("#download", "href")
        assert href == f"/s/{token}/file?download=1"
        async with page.expect_download() as info:
            await page.click("#download")
        download = await info.value
        saved = tmp_path / "phone.mp4"
        await download.save_as(saved)
        assert saved.read_bytes() == (state / (await daemon_export_path(daemon, e))).read_bytes()
        html = await page.content()
        assert "/api/" not in html  # the page links to nothing but its own clip
        await context.close()

        # the QR code decodes to the link
        context = await browser.new_context()
        page = await context.new_page()
        response = await page.goto(s["local_qr"])
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("image/svg+xml")
        png = await page.screenshot()
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        text, _, _ = cv2.QRCodeDetector().detectAndDecode(img)
        assert text == s["url"]
        await context.close()

        # the token is not in the database, only its hash
        db_bytes = b"".join(p.read_bytes() for p in state.glob("climbd.db*"))
        assert token.encode() not in db_bytes
        assert _hash_in_db(state, token)


async def daemon_export_path(daemon: Any, e: dict[str, Any]) -> str:
    from climbd.storage.exports import ExportStore

    return (await ExportStore(daemon.db).get(e["id"])).path


async def _status(c: Client, url: str, want: int) -> bool:
    return (await c.req("GET", url, raw=True))[0] == want


def _hash_in_db(state: Path, token: str) -> bool:
    with sqlite3.connect(state / "climbd.db") as conn:
        rows = conn.execute("SELECT token_sha256 FROM shares").fetchall()
    return (share.hash_token(token),) in rows


async def test_expired_and_revoked_links_stop_working(tmp_path: Path, media: Path,
                                                      browser: Any) -> None:
    state = copy_template(tmp_path / "state")
    async with start_daemon(state) as (c, _):
        e = await _done_export(c, "video", start_s=0, end_s=1)
        short = await _share(c, e["id"], ttl_s=1.5)
        revoked = await _share(c, e["id"])
        assert (await c.req("GET", short["local"] + "/file", raw=True))[0] == 200
        status, body = await c.req("DELETE", f"/api/shares/{revoked['id']}")
        assert status == 200 and body["state"] == "revoked"
        # the 1.5 s link expires (the revoked one is refused at once)
        await async_wait_until(
            lambda: _status(c, short["local"] + "/file", 410), 10, 0.1, "the link never expired")
        context = await browser.new_context()
        page = await context.new_page()
        for link, code, word in ((short["local"], 410, "expired"),
                                 (revoked["local"], 410, "revoked"),
                                 (short["local"][:-4] + "AAAA", 404, "not valid")):
            response = await page.goto(link)
            assert response is not None and response.status == code, link
            assert word in (await page.inner_text("#message")).lower()
            assert await page.query_selector("video") is None
            for suffix in ("/file", "/qr.svg"):
                assert (await c.req("GET", link + suffix, raw=True))[0] == code
        await context.close()
        status, listing = await c.req("GET", f"/api/exports/{e['id']}/shares")
        assert [s["state"] for s in listing["items"]] == ["expired", "revoked"]
        # deleting the export kills its links too
        fresh = await _share(c, e["id"])
        assert (await c.req("DELETE", f"/api/exports/{e['id']}"))[0] == 200
        assert (await c.req("GET", fresh["local"], raw=True))[0] == 404


@pytest.mark.integration
async def test_a_token_opens_its_own_clip_and_nothing_else(tmp_path: Path,
                                                           media: Path) -> None:
    state = copy_template(tmp_path / "state")
    async with start_daemon(state) as (c, daemon):
        mine = await _done_export(c, "video", start_s=0, end_s=1)
        other = await _done_export(c, "csv")
        link = (await _share(c, mine["id"]))["local"]
        token = link.rsplit("/", 1)[1]
        mine_bytes = (await c.req("GET", mine["file_url"], raw=True))[1]
        other_bytes = (await c.req("GET", other["file_url"], raw=True))[1]
        status, data = await c.req("GET", f"/s/{token}/file", raw=True)
        assert status == 200 and data == mine_bytes
        # query parameters naming another export or session are ignored
        for q in (f"?export={other['id']}", "?session=1", f"?id={other['id']}&download=1"):
            status, data = await c.req("GET", f"/s/{token}/file{q}", raw=True)
            assert status == 200 and data == mine_bytes and data != other_bytes
        # nothing else lives under the token: other sessions' videos and poses are refused
        for path in (f"/s/{token}/sessions/1/video", f"/s/{token}/poses",
                     f"/s/{token}/api/sessions/1/poses", f"/s/{token}/{other['id']}/file",
                     f"/s/{token}/file/../../api/exports/{other['id']}/file",
                     f"/s/{token}/exports/{other['id']}", f"/s/{token}/video"):
            status, data = await c.req("GET", path, raw=True)
            assert status == 404 and data not in (mine_bytes, other_bytes), path
        # malformed tokens never reach the database
        for bad in ("short", "x" * 65, "a b c d e f g h i j k", "%00" * 20):
            assert (await c.req("GET", f"/s/{bad}", raw=True))[0] == 404
        # sharing an unfinished or unknown export is refused
        assert (await c.req("POST", "/api/exports/999/share", json={}))[0] == 404
        status, body = await c.req("POST", f"/api/exports/{mine['id']}/share",
                                   json={"ttl_s": -1})
        assert status == 422
        # and an export that is not finished cannot be shared
        e = (await c.req("POST", "/api/sessions/1/exports", json={"kind": "overlay"}))[1]
        status, body = await c.req("POST", f"/api/exports/{e['id']}/share", json={})
        assert status == 409 and "only a finished export" in body["message"]
        await c.wait_export(e["id"])
        assert daemon.state_dir == state


@pytest.mark.integration
async def test_configured_base_url_is_used_in_links(tmp_path: Path, media: Path) -> None:
    from tests.export_support import daemon_config

    state = copy_template(tmp_path / "state")
    config = daemon_config(share={"base_url": "http://192.0.2.10:8080/", "ttl_s": 60})
    async with start_daemon(state, config) as (c, _):
        e = await _done_export(c, "csv")
        s = await _share(c, e["id"], ttl_s=3600)  # capped at share.ttl_s
        assert s["url"].startswith("http://192.0.2.10:8080/s/")
        assert s["expires_at"] - s["created_at"] == pytest.approx(60, abs=1)
        token = s["url"].rsplit("/", 1)[1]
        status, page = await c.req("GET", f"/s/{token}", raw=True)
        assert status == 200 and b"Pose data (CSV)" in page and b"<video" not in page


@pytest.mark.unit
def test_tokens_and_urls() -> None:
    tokens = {share.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(share.looks_like_token(t) for t in tokens)
    t = next(iter(tokens))
    assert share.token_matches(t, share.hash_token(t)) and not share.token_matches(
        t + "x", share.hash_token(t))
    assert share.base_url_for("", "10.0.0.5:8080") == "http://10.0.0.5:8080"
    assert share.base_url_for("https://wall.local/", "ignored") == "https://wall.local"
    assert share.base_url_for("", "[fe80::1]:8080") == "http://[fe80::1]:8080"
    for bad in ("", None, "evil.com/path", "a b"):
        with pytest.raises(ValueError):
            share.base_url_for("", bad)
    assert share.share_url("http://h:1", "tok") == "http://h:1/s/tok"
    assert share.qr_svg("http://h:1/s/tok").lstrip().startswith(b"<?xml")
