"""The live page in headless Chromium plays an RTSP camera's own H.264 (passthrough).

Everything runs inside a private network namespace (``unshare -n``: only loopback exists,
PLATFORM.md): a real RTSP camera (gst-rtsp-server), ``climbd run`` with
``video.encoder = "copy"`` and Chromium on the live page. Checked for a Constrained Baseline
camera and a High profile one (answered with its own profile-level-id): frames are
displayed at the camera's size and the daemon encodes nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests import ui_support
from tests.conftest import DaemonProcess, auth_headers
from tests.rtsp_support import RtspCamera, rtsp_server_available, wait_for
from tests.ui_support import browser_fixture, inner, netns_suite

pytestmark = pytest.mark.browser


test_passthrough_in_chromium_in_a_private_network_namespace = netns_suite(
    __file__, timeout=900, inner_timeout=600, media=False, also_needs=rtsp_server_available)


browser = browser_fixture("browser")


async def _wait_js(page: Any, expression: str, timeout: float = 30.0) -> Any:
    return await ui_support.wait_js(page, f"() => ({expression})", timeout)


async def _until(cond: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``cond()`` without blocking the event loop (page events must keep coming)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        await asyncio.sleep(0.1)


@inner
@pytest.mark.parametrize(("profile", "preset", "plid"),
                         [("baseline", "ultrafast", "42"), ("main", "superfast", "4d"),
                          ("high", "superfast", "64")])
async def test_inner_live_page_plays_the_cameras_h264(
        tmp_path: Path, browser: Any, profile: str, preset: str, plid: str) -> None:
    """Baseline and Main play; High is refused clearly by this Chromium build, whose offer
    has no High (it offers 42001f, 42e01f, 4d001f, f4001f), rather than sent undecodable."""
    cam = RtspCamera(tmp_path, "cam", "pw-b", fps=30, gop=30, profile=profile, preset=preset)
    cam.start()
    cfg = tmp_path / "climbd.toml"
    cfg.write_text(f'[capture]\nsource = "{cam.url()}"\n[video]\nencoder = "copy"\n'
                   '[pose]\nworkers = 1\n[webrtc]\nhost_candidates = ["127.0.0.1"]\n')
    d = DaemonProcess(tmp_path / "state", cam.url(), "--config", str(cfg), loop=False)
    try:
        d.wait_ready(90)

        def video() -> dict[str, Any]:
            return dict(d.get("/api/health")[1]["video"])

        v = wait_for(lambda: (v := video())["passthrough"]["profile_level_id"] and v, 20,
                     "camera stream")
        assert v["mode"] == "copy" and v["passthrough"]["profile_level_id"].startswith(plid)
        page = await browser.new_page(viewport={"width": 1280, "height": 800},
                                      extra_http_headers=auth_headers(d.base))
        answers: list[str] = []
        whep: list[tuple[int, str]] = []
        offers: list[str] = []

        async def on_response(response: Any) -> None:
            if response.url.endswith("/api/whep"):
                text = await response.text()
                whep.append((response.status, text[:400]))
                if response.status == 201:
                    answers.append(text)

        page.on("response", on_response)
        page.on("request", lambda r: offers.append(r.post_data or "")
                if r.url.endswith("/api/whep") and r.method == "POST" else None)
        await page.goto(d.base + "/")
        await _until(lambda: offers, "the page's WHEP offer")
        high_offered = bool(re.search(r"profile-level-id=64", offers[0]))
        if profile == "high" and not high_offered:
            await _until(lambda: whep, "the WHEP answer")
            status, detail = whep[0]
            assert status == 422 and "no-h264-profile" in detail and "High" in detail, whep
            await page.close()
            return
        try:
            await _wait_js(page, "window.climbd && window.climbd.state.stats.framesShown > 45",
                           60)
        except AssertionError:
            stats = await page.evaluate("() => JSON.stringify(window.climbd.state.stats)")
            raise AssertionError(f"{whep[:2]} {stats} {d.log()[-1500:]}") from None
        size = await page.evaluate(
            "() => [document.getElementById('video').videoWidth, "
            "document.getElementById('video').videoHeight]")
        assert size == [640, 360], size
        assert answers and re.search(rf"profile-level-id={plid}", answers[0]), answers
        await page.close()
        assert video()["encoded"] == 0, "the daemon encoded nothing: the camera's H.264"
    finally:
        d.stop()
        cam.stop()
