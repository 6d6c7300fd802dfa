"""The live page in headless Chromium against a real ``climbd run``, all inside a private
network namespace (``unshare -n``: only a loopback interface exists, so no WebRTC packet can
reach another interface; see PLATFORM.md).

The outer test re-runs this file inside the namespace; the ``test_inner_*`` tests only run
there. They check, with real pixels, that the skeleton is drawn on the body in the frame the
page is displaying: the page's canvas is read at the drawn landmark positions, and the very
same video frame is grabbed from the <video> element and given to BlazePose in the test, whose
landmarks must land where the page drew its skeleton.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from tests import ui_support
from tests.conftest import REPO, STEEPWALL, DaemonProcess, auth_headers
from tests.ui_support import IN_NETNS, browser_fixture, inner, netns_suite

pytestmark = [pytest.mark.browser, pytest.mark.timing]  # wall-clock rates and delays

CONFIG = """
[webrtc]
host_candidates = ["127.0.0.1"]
max_viewers = 4
ice_timeout_s = 5.0
"""
LANDSCAPE = {"width": 1280, "height": 800}
PORTRAIT = {"width": 800, "height": 1280}
TORSO = [11, 12, 23, 24]  # shoulders and hips


# -- outer: run the inner tests in a private network namespace -------------------------------


test_browser_suite_in_a_private_network_namespace = netns_suite(
    __file__, timeout=900, inner_timeout=600)


# -- inner fixtures ------------------------------------------------------------------------


class _Daemon(DaemonProcess):
    """``climbd run`` on the clip with this suite's config (:meth:`respawn` restarts it on
    the same address)."""

    def __init__(self, root: Path):
        cfg = root / "climbd.toml"
        cfg.write_text(CONFIG)
        super().__init__(root / "state", STEEPWALL, "--config", str(cfg))


def _start_daemon(root: Path) -> _Daemon:
    d = _Daemon(root)
    d.wait_ready(90)
    return d


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Daemon]:
    if not IN_NETNS:
        pytest.skip("inner")
    d = _start_daemon(tmp_path_factory.mktemp("browser"))
    yield d
    d.stop()


browser = browser_fixture("browser")


async def _wait_js(page: Any, expression: str, timeout: float = 30.0) -> Any:
    """Poll a JavaScript expression until truthy (:func:`tests.ui_support.wait_js`: the
    daemon's CSP forbids ``page.wait_for_function``)."""
    return await ui_support.wait_js(page, f"() => ({expression})", timeout)


CSP_VIOLATIONS: list[str] = []


async def _open(browser: Any, base: str, viewport: dict[str, int]) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport=viewport, extra_http_headers=auth_headers(base))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: CSP_VIOLATIONS.append(m.text)
            if "Content Security Policy" in m.text else None)
    await page.goto(base + "/")
    await _wait_js(page, "window.climbd && window.climbd.state.stats.framesShown > 10", 60)
    return page, requests


async def _viewers(base: str) -> int:
    async with aiohttp.ClientSession(headers=auth_headers(base)) as s, \
            s.get(base + "/api/live/stats") as r:
        return int((await r.json())["viewers"])


# JavaScript run in the page: at a displayed frame whose skeleton was drawn from the exact
# pose of that frame, read the overlay's pixels at the drawn points and grab the frame.
SNAPSHOT = """
() => new Promise((resolve, reject) => {
  const { overlay } = window.climbd;
  const video = document.getElementById("video");
  let tries = 0;
  const grab = (now, md) => {
    const last = overlay.last;
    if (!last || !last.exact || last.frameTs !== md.rtpTimestamp || !last.points.length) {
      if (++tries > 300) { reject(new Error("no exact skeleton frame")); return; }
      video.requestVideoFrameCallback(grab);
      return;
    }
    const dpr = overlay.dpr;
    const ctx = overlay.ctx;
    const alpha = (x, y) => {
      const d = ctx.getImageData(Math.round(x * dpr) - 1, Math.round(y * dpr) - 1, 3, 3).data;
      let a = 0;
      for (let i = 3; i < d.length; i += 4) a = Math.max(a, d[i]);
      return a;
    };
    const frame = document.createElement("canvas");
    frame.width = md.width; frame.height = md.height;
    frame.getContext("2d").drawImage(video, 0, 0, md.width, md.height);
    const r = last.rect;
    resolve({
      points: last.points,
      rect: r,
      frameTs: last.frameTs,
      size: [md.width, md.height],
      element: [overlay.canvas.clientWidth, overlay.canvas.clientHeight],
      alphaAtPoints: last.points.map((p) => (p ? alpha(p[0], p[1]) : null)),
      alphaCorners: [alpha(r.left + 3, r.top + 3), alpha(r.left + r.width - 3, r.top + 3),
                     alpha(r.left + 3, r.top + r.height - 3),
                     alpha(r.left + r.width - 3, r.top + r.height - 3)],
      png: frame.toDataURL("image/png"),
    });
  };
  video.requestVideoFrameCallback(grab);
})
"""


def _pose_of(png_data_url: str) -> np.ndarray | None:
    """BlazePose (a fresh graph: person detection, no tracking) on a grabbed frame."""
    from climbd.pose import PoseEstimator

    raw = base64.b64decode(png_data_url.split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None and float(bgr.mean()) > 20, "the grabbed frame is blank"
    with PoseEstimator() as est:
        pose = est.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return pose.image


# -- inner tests ---------------------------------------------------------------------------


@inner
@pytest.mark.parametrize("viewport", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
async def test_inner_skeleton_is_drawn_on_the_body_of_the_displayed_frame(
        daemon: DaemonProcess, browser: Any, viewport: dict[str, int]) -> None:
    page, _ = await _open(browser, daemon.base, viewport)
    assert await page.get_attribute("#connection", "data-state") == "live"
    await _wait_js(page, "window.climbd.state.stats.exactDraws > 5", 60)
    # single-frame person detection (no tracking) can miss on a compressed frame: a few tries
    for _ in range(4):
        snap = await page.evaluate(SNAPSHOT)
        independent = _pose_of(snap["png"])
        if independent is not None:
            break
    assert independent is not None, "BlazePose finds no person in four displayed frames"
    w, h = snap["size"]
    assert (w, h) == (540, 720)
    # object-fit: contain geometry: centred, aspect kept, touching two opposite edges
    ew, eh = snap["element"]
    r = snap["rect"]
    s = min(ew / w, eh / h)
    assert r["width"] == pytest.approx(w * s, abs=1) and r["height"] == pytest.approx(h * s, abs=1)
    assert r["left"] == pytest.approx((ew - w * s) / 2, abs=1)
    assert r["top"] == pytest.approx((eh - h * s) / 2, abs=1)
    # the canvas has skeleton pixels at every landmark on the picture (the drawing is clipped
    # to it: a foot below the frame is not drawn on the bars) and nothing in the corners
    inside = [a for p, a in zip(snap["points"], snap["alphaAtPoints"], strict=True)
              if p is not None and r["left"] + 2 <= p[0] <= r["left"] + r["width"] - 2
              and r["top"] + 2 <= p[1] <= r["top"] + r["height"] - 2]
    outside = [a for p, a in zip(snap["points"], snap["alphaAtPoints"], strict=True)
               if p is not None and not (r["left"] - 6 <= p[0] <= r["left"] + r["width"] + 6
                                         and r["top"] - 6 <= p[1] <= r["top"] + r["height"] + 6)]
    assert len(inside) >= 20 and min(inside) > 200, snap["alphaAtPoints"]
    assert all(a == 0 for a in outside), (snap["points"], snap["alphaAtPoints"])
    assert snap["alphaCorners"] == [0, 0, 0, 0]
    # an independent BlazePose run on the very frame on screen finds the body where the
    # page drew it (torso landmarks within 4 % of the picture height)
    errors = []
    for i in TORSO:
        p = snap["points"][i]
        assert p is not None, f"landmark {i} not drawn"
        x = r["left"] + independent[i, 0] * r["width"]
        y = r["top"] + independent[i, 1] * r["height"]
        errors.append(float(np.hypot(p[0] - x, p[1] - y)) / r["height"])
    assert max(errors) < 0.04, f"skeleton off the body by {max(errors):.1%} of the height"
    await page.close()


@inner
async def test_inner_video_is_held_back_so_poses_meet_their_frames(
        daemon: DaemonProcess, browser: Any) -> None:
    """Poses come later than video (inference); the page raises the jitter buffer's target
    delay until most poses are on screen with the very frame they were computed on."""
    page, _ = await _open(browser, daemon.base, LANDSCAPE)
    try:
        # the delay has settled once 50 poses in a row were mostly drawn on their own frames
        stats = "({...window.climbd.state.stats})"
        deadline = time.monotonic() + 60
        a = await page.evaluate(stats)
        while True:
            await _wait_js(page, f"window.climbd.state.stats.posesReceived >= "
                                 f"{a['posesReceived'] + 50}", 30)
            b = await page.evaluate(stats)
            settled = (b["exactDraws"] - a["exactDraws"]
                       >= 0.6 * (b["posesReceived"] - a["posesReceived"]))
            if settled or time.monotonic() > deadline:
                break
            a = b
        s0 = await page.evaluate(stats)
        # a window of 100 poses (4 s of the 25 fps clip), not a fixed time
        await _wait_js(page, f"window.climbd.state.stats.posesReceived >= "
                             f"{s0['posesReceived'] + 100}", 60)
        s1 = await page.evaluate(stats)
        sync = await page.evaluate("({target: window.climbd.sync.targetMs,"
                                   " supported: window.climbd.sync.supported})")
        poses = s1["posesReceived"] - s0["posesReceived"]
        exact = s1["exactDraws"] - s0["exactDraws"]
        assert sync["supported"], "jitterBufferTarget/playoutDelayHint missing"
        assert 0 < sync["target"] <= 300, sync
        assert poses >= 100 and exact >= 0.6 * poses, (exact, poses, sync)
    finally:
        await page.close()


@inner
async def test_inner_touch_targets_and_offline_page(daemon: DaemonProcess, browser: Any) -> None:
    for viewport in (LANDSCAPE, PORTRAIT):
        page, requests = await _open(browser, daemon.base, viewport)
        boxes = await page.eval_on_selector_all(
            "button, input",
            "els => els.filter(e => e.offsetParent).map(e => {"
            " const r = e.getBoundingClientRect(); return [e.id, r.width, r.height]; })")
        assert len(boxes) >= 7
        small = [b for b in boxes if b[1] < 64 or b[2] < 64]
        assert not small, f"touch targets under 64 CSS px: {small}"
        await page.close()
        origins = {re.match(r"^(\w+://[^/]+)", u).group(1) for u in requests  # type: ignore[union-attr]
                    if not u.startswith(("data:", "blob:"))}
        assert origins == {daemon.base}, origins
    # and the files themselves name no other host
    assert not CSP_VIOLATIONS, CSP_VIOLATIONS  # the page needs no inline script or style
    for f in (REPO / "webui").rglob("*"):
        if f.suffix in (".html", ".js", ".css", ".json", ".svg"):
            text = f.read_text()
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f


@inner
async def test_inner_refusals_are_shown_and_retried(daemon: DaemonProcess, browser: Any) -> None:
    """An unpaired tablet (401) gets a big "Pair this tablet" link; a full live view (503)
    says so and retries after Retry-After, then plays once a slot is free."""
    page = await browser.new_page(viewport=LANDSCAPE, extra_http_headers=auth_headers(daemon.base))
    try:
        answers = {"status": 401}

        async def whep(route: Any) -> None:
            if route.request.method == "POST" and answers["status"]:
                status = answers["status"]
                await route.fulfill(
                    status=status, content_type="application/problem+json",
                    headers={"Retry-After": "1"} if status == 503 else {},
                    body=json.dumps({"status": status, "detail": "refused by the test",
                                     "error": "x"}))
            else:
                await route.continue_()

        await page.route("**/api/whep", whep)
        await page.goto(daemon.base + "/")
        await page.wait_for_selector('#connection[data-state="unpaired"]', timeout=20000)
        link = await page.query_selector("#pair-link")
        assert link is not None and await link.is_visible()
        assert await link.get_attribute("href") == "/pair"
        box = await link.bounding_box()
        assert box is not None and box["width"] >= 64 and box["height"] >= 64
        answers["status"] = 503
        await page.evaluate("window.climbd.player.start()")
        await page.wait_for_selector('#connection[data-state="full"]', timeout=20000)
        assert "refused by the test" in (await page.text_content("#connection") or "")
        assert not await link.is_visible()
        answers["status"] = 0  # a slot frees up: the retry after Retry-After connects
        await page.wait_for_selector('#connection[data-state="live"]', timeout=30000)
        await _wait_js(page, "window.climbd.state.stats.framesShown > 10", 30)
    finally:
        await page.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


@inner
async def test_inner_pwa_manifest_and_icons(daemon: DaemonProcess, browser: Any) -> None:
    page, _ = await _open(browser, daemon.base, LANDSCAPE)
    href = await page.get_attribute('link[rel="manifest"]', "href")
    assert href
    async with aiohttp.ClientSession(base_url=daemon.base, headers=auth_headers(daemon.base)) as s:
        async with s.get(href) as r:
            assert r.status == 200
            manifest = await r.json(content_type=None)
        assert manifest["display"] == "fullscreen" and manifest["start_url"] == "/"
        sizes = set()
        for icon in manifest["icons"]:
            async with s.get(icon["src"]) as r:
                assert r.status == 200, icon
                data = await r.read()
            if icon["type"] == "image/png":
                w, h = _png_size(data)
                assert f"{w}x{h}" == icon["sizes"]
                sizes.add(w)
        assert {192, 512} <= sizes
    await page.close()


@inner
async def test_inner_recording_from_the_page_creates_a_session(
        daemon: DaemonProcess, browser: Any) -> None:
    page, _ = await _open(browser, daemon.base, PORTRAIT)
    try:
        name = f"page test {time.time():.0f}"
        await page.fill("#session-name", name)
        await page.click("#record")
        await page.wait_for_selector('#record[data-state="recording"]', timeout=10000)
        assert await page.is_visible("#rec-badge")
        await _wait_js(page, "document.getElementById('timer').textContent !== '0:00'", 10)
        assert name in (await page.text_content("#rec-status") or "")
        await page.click("#record")
        await page.wait_for_selector('#record[data-state="idle"]', timeout=15000)
        assert not await page.is_visible("#rec-badge")
        # save-last offers only what the buffer holds
        buffered = await page.evaluate("window.climbd.state.recording.pre_roll_available_s")
        for _ in range(10):
            if await page.is_disabled("#save-more"):
                break
            await page.click("#save-more")
        offered = int(await page.text_content("#save-seconds") or "0")
        assert 0 < offered <= buffered + 1, (offered, buffered)
        await page.click("#save-last")
        await _wait_js(page, "document.getElementById('shell-toast').textContent"
                       ".startsWith('Saved the last')", 20)
        async with aiohttp.ClientSession(base_url=daemon.base,
                                         headers=auth_headers(daemon.base)) as s, \
                s.get("/api/sessions") as r:
            items = (await r.json())["items"]
        mine = [it for it in items if it["name"] == name]
        assert len(mine) == 2, items  # the recording and the saved last seconds
        assert all(it["status"] == "completed" and it["frame_count"] > 0 for it in mine), mine
    finally:
        await page.close()


@inner
async def test_inner_closing_the_page_ends_its_session(daemon: DaemonProcess,
                                                       browser: Any) -> None:
    before = await _viewers(daemon.base)
    page, _ = await _open(browser, daemon.base, LANDSCAPE)
    assert await _viewers(daemon.base) == before + 1
    await page.close(run_before_unload=True)
    deadline = time.monotonic() + 5
    remaining = before + 1
    while time.monotonic() < deadline:
        remaining = await _viewers(daemon.base)
        if remaining == before:
            break
        await asyncio.sleep(0.1)
    assert remaining == before  # DELETE/DTLS close on pagehide, not a 30 s ICE timeout


@inner
async def test_inner_page_reconnects_after_the_daemon_restarts(
        daemon: _Daemon, browser: Any) -> None:
    page, _ = await _open(browser, daemon.base, LANDSCAPE)
    try:
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0, "SIGTERM: a clean stop within 30 s"
        await page.wait_for_selector(
            '#connection:is([data-state="reconnecting"], [data-state="offline"])',
            timeout=20000)
        daemon.respawn()
        daemon.wait_ready(90)
        await page.wait_for_selector('#connection[data-state="live"]', timeout=60000)
        before = await page.evaluate("window.climbd.state.stats.framesShown")
        await _wait_js(page, f"window.climbd.state.stats.framesShown > {before + 25}", 30)
        await _wait_js(page, "window.climbd.overlay.last && window.climbd.overlay.last.exact", 60)
    finally:
        await page.close()
