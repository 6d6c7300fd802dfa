"""The replay page in headless Chromium against a real ``climbd run`` (HTTP on 127.0.0.1
only: replay uses no WebRTC).

Frame accuracy is checked three ways on the frame the page says it shows: the video element's
picture is grabbed and compared with every frame PyAV decodes from the same file (it must
be closest to the one asked for), the drawn landmark positions are compared with the stored
landmarks of that frame (and those differ from the neighbours'), and the overlay canvas is
read: skeleton pixels at those positions, nothing elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import auth_headers, http
from tests.replay_support import (
    NAMES,
    PLAYER_STATE,
    Env,
    chromium,
    decode_frames,
    start_daemon,
    wait_js,
)

pytestmark = [pytest.mark.browser, pytest.mark.timing]  # wall-clock rates and delays

SKELETON_RGB = [(0x00, 0xE5, 0xFF), (0xFF, 0x9F, 0x0A), (0xFF, 0xFF, 0xFF)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Env]:
    e = start_daemon(tmp_path_factory.mktemp("replay-browser"))
    yield e
    e.daemon.stop()


@pytest.fixture(scope="module")
def steep(env: Env) -> dict[str, Any]:
    """The steepwall session: frame times, decoded frames, stored image landmarks by frame."""
    sid = NAMES["steepwall"]
    _, frames = http("GET", f"{env.base}/api/sessions/{sid}/frames")
    _, poses = http("GET", f"{env.base}/api/sessions/{sid}/poses")
    image = {f: np.array([[math.nan if v is None else v for v in lm] for lm in img])
             for f, img in zip(poses["frames"], poses["image"], strict=True)}
    return {"id": sid, "times": frames["times"], "image": image,
            "decoded": decode_frames(env.state / "sessions" / str(sid) / "video.mp4")}


async def _open(page: Any, base: str, query: str) -> None:
    await page.goto(f"{base}/ui/replay.html?{query}")
    await wait_js(page, "() => window.replay && (window.replay.state.message !== null"
                        " || Boolean(window.replay.player && window.replay.player.shown))")


async def _shown(page: Any, index: int) -> dict[str, Any]:
    """Wait until frame ``index`` is on screen with its skeleton decided, then snapshot it."""
    try:
        await wait_js(page, """(i) => { const p = window.replay.player;
            return p.shown && p.shown.index === i && p.overlay.last
                   && p.overlay.last.frameTs === i && p.waitingPose === null
                   && !p.video.seeking; }""", arg=index)
    except AssertionError:
        state = await page.evaluate(f"() => ({PLAYER_STATE})(window.replay.player)")
        raise AssertionError(f"frame {index} never settled on screen: {state}") from None
    return await page.evaluate(SNAPSHOT)


SNAPSHOT = """() => {
  const p = window.replay.player;
  const o = p.overlay;
  const last = o.last;
  const grab = document.createElement("canvas");
  grab.width = p.video.videoWidth; grab.height = p.video.videoHeight;
  grab.getContext("2d").drawImage(p.video, 0, 0);
  const px = (x, y) => {
    const d = o.ctx.getImageData(Math.round(x * o.dpr), Math.round(y * o.dpr), 1, 1).data;
    return [d[0], d[1], d[2], d[3]];
  };
  const alpha = (x, y) => {
    const d = o.ctx.getImageData(Math.round(x * o.dpr) - 1, Math.round(y * o.dpr) - 1, 3, 3).data;
    let a = 0; for (let i = 3; i < d.length; i += 4) a = Math.max(a, d[i]); return a;
  };
  const r = last.rect;
  const grid = [];
  for (let gy = 0; gy < 24; gy++) for (let gx = 0; gx < 18; gx++) {
    const x = r.left + (gx + 0.5) * r.width / 18, y = r.top + (gy + 0.5) * r.height / 24;
    grid.push([x, y, alpha(x, y)]);
  }
  return {
    index: p.shown.index, mediaTime: p.shown.mediaTime, poseFrame: last.poseTs,
    exact: last.exact, points: last.points, rect: r, dpr: o.dpr,
    size: [o.canvas.clientWidth, o.canvas.clientHeight],
    centre: last.points.map((q) => (q ? px(q[0], q[1]) : null)),
    alphaAt: last.points.map((q) => (q ? alpha(q[0], q[1]) : null)),
    grid, png: grab.toDataURL("image/png"),
  };
}"""


def _png(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _skeleton_colour(rgb: list[int]) -> bool:
    """The colour of a landmark dot: cyan or orange, or their anti-aliased blend with the
    white ring of an overlapping dot."""
    white = np.array(SKELETON_RGB[2], float)
    return any(_seg_dist(np.array(rgb, float), np.array(col, float), white) < 40
               for col in SKELETON_RGB[:2])


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0, 1))
    return float(np.linalg.norm(p - (a + t * ab)))


def _check_frame(snap: dict[str, Any], index: int, steep: dict[str, Any]) -> None:
    times, image, decoded = steep["times"], steep["image"], steep["decoded"]
    # 1. the video shows frame `index`: its media time, and its picture
    assert snap["index"] == index
    assert snap["mediaTime"] == pytest.approx(times[index], abs=1e-4)
    shown = _png(snap["png"]).astype(np.float32)
    near = range(max(0, index - 2), min(len(decoded), index + 3))
    diffs = {i: float(np.abs(shown - decoded[i].astype(np.float32)).mean()) for i in near}
    assert min(diffs, key=diffs.__getitem__) == index, diffs
    # 2. the skeleton drawn is the stored one of that frame, at its image position
    assert snap["exact"] and snap["poseFrame"] == index
    r = snap["rect"]
    lm = image[index]
    drawn = 0
    for i, q in enumerate(snap["points"]):
        if lm[i, 3] < 0.3:
            assert q is None, f"landmark {i} is hidden (visibility {lm[i, 3]:.2f})"
            continue
        ex, ey = r["left"] + lm[i, 0] * r["width"], r["top"] + lm[i, 1] * r["height"]
        assert q is not None and math.hypot(q[0] - ex, q[1] - ey) < 0.5, (i, q, ex, ey)
        drawn += 1
    assert drawn >= 10
    for other in (index - 1, index + 1):  # the check can tell neighbouring frames apart
        if other in image:
            delta = np.hypot((image[other][:, 0] - lm[:, 0]) * r["width"],
                             (image[other][:, 1] - lm[:, 1]) * r["height"])
            assert float(np.nanmax(delta)) > 0.5
    # 3. pixels: skeleton-coloured at every drawn landmark, transparent far from the skeleton
    w, h = snap["size"]
    for i, (a, c) in enumerate(zip(snap["alphaAt"], snap["centre"], strict=True)):
        q = snap["points"][i]
        if a is None or not (2 <= q[0] <= w - 2 and 2 <= q[1] <= h - 2):
            continue  # hidden, or off the canvas (a foot below the picture)
        assert a > 200, f"nothing drawn at landmark {i}"
        assert _skeleton_colour(c[:3]), (i, c)
    pts = [np.array(q) for q in snap["points"] if q is not None]
    edges = [(np.array(snap["points"][a]), np.array(snap["points"][b]))
             for a, b in CONNECTIONS if snap["points"][a] and snap["points"][b]]
    far = 0
    for x, y, alpha in snap["grid"]:
        p = np.array([x, y])
        d = min([float(np.linalg.norm(p - q)) for q in pts]
                + [_seg_dist(p, a, b) for a, b in edges])
        if d > 20:
            far += 1
            assert alpha == 0, f"skeleton-coloured pixel at ({x:.0f}, {y:.0f}), {d:.0f} px away"
    assert far > 300


CONNECTIONS = [
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
    (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18),
    (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27),
    (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
]


async def test_seek_shows_the_frame_and_its_own_skeleton(env: Env, steep: dict[str, Any]
                                                         ) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base, f"id={steep['id']}")
        # by time (as the timeline and ±1 s do), including the frames next to a pose-window
        # boundary (10 s = frame 250) and the last frame
        for t, index in ((4.02, 100), (9.98, 249), (10.0, 250), (15.04, 376), (1.52, 38)):
            note = await page.evaluate("(t) => window.replay.player.seekTime(t)", t)
            assert note is None
            _check_frame(await _shown(page, index), index, steep)
        assert not errors, errors


async def test_frame_steps_move_exactly_one_frame(env: Env, steep: dict[str, Any]) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base, f"id={steep['id']}&t=4.0")
        await _shown(page, 100)
        await page.click("#step-fwd")
        _check_frame(await _shown(page, 101), 101, steep)
        for _ in range(3):  # quick presses queue up: three frames, not one
            await page.click("#step-fwd")
        await _shown(page, 104)
        await page.keyboard.press("ArrowLeft")
        snap = await _shown(page, 103)
        assert snap["mediaTime"] == pytest.approx(steep["times"][103], abs=1e-4)
        await page.keyboard.press("Shift+ArrowRight")  # +1 s = 25 frames
        await _shown(page, 128)
        await page.click("#back-1s")
        await _shown(page, 103)
        text = await page.text_content("#frame-info")
        assert text == "frame 104 / 377"
        assert not errors, errors


async def test_a_seek_back_before_the_last_seek_is_presented_lands(
        env: Env, steep: dict[str, Any]) -> None:
    """Between a seek's "seeked" and its video-frame callback the player still says the old
    frame is shown; asking for that old frame then must still seek back, not count it as on
    screen while the element goes on to present the other one. Whether the callback comes
    before or after "seeked" is Chromium's timing: six rounds, each must land."""
    async with chromium() as (_, page, errors):
        await _open(page, env.base, f"id={steep['id']}&t=4.0")
        await _shown(page, 100)
        for far in (110, 90, 130, 75, 101, 99):
            frames = await page.evaluate("() => window.replay.player.stats.frames")
            await page.evaluate("""(far) => new Promise((resolve) => {
                const p = window.replay.player;
                p.video.addEventListener("seeked", () => { p.seekFrame(100); resolve(); },
                                         { once: true });
                p.seekFrame(far); })""", far)
            await wait_js(page, """(n) => { const p = window.replay.player;
                return p.stats.frames > n && !p.video.seeking && p.queued === null; }""",
                          arg=frames)
            snap = await _shown(page, 100)
            assert await page.evaluate("() => window.replay.player.index") == 100, far
        _check_frame(snap, 100, steep)
        assert not errors, errors


async def _rate(page: Any, seconds: float) -> float:
    """Frames advanced per wall-clock second while playing (from the page's frame log)."""
    await page.evaluate("() => { window.replay.player.stats.frameLog.length = 0; }")
    await page.click("#play")
    await wait_js(page, "() => window.replay.player.playing")
    await page.wait_for_timeout(int(seconds * 1000))
    log = await page.evaluate("() => window.replay.player.stats.frameLog.slice()")
    await page.click("#play")
    log = [e for e in log if e[1] > log[0][1]]  # from the first frame that moved
    assert len(log) > 5, log
    return (log[-1][1] - log[0][1]) / ((log[-1][0] - log[0][0]) / 1000)


async def test_quarter_speed_plays_at_a_quarter_of_the_rate(env: Env,
                                                            steep: dict[str, Any]) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base, f"id={steep['id']}&t=1")
        await _shown(page, 25)
        await page.click('[data-speed="0.25"]')
        assert await page.evaluate("() => window.replay.player.video.playbackRate") == 0.25
        quarter = await _rate(page, 4.0)
        assert quarter == pytest.approx(0.25 * 25, rel=0.12), quarter
        await page.click('[data-speed="1"]')
        full = await _rate(page, 2.0)
        assert full == pytest.approx(25, rel=0.12), full
        # the skeleton keeps up: drawn for frames while playing slowly
        stats = await page.evaluate("() => window.replay.player.stats")
        assert stats["drawn"] > 20 and stats["noPose"] == 0
        assert not errors, errors


@pytest.mark.parametrize(("query", "needle"), [
    ("id=999", "does not exist"),
    ("id=abc", "No session was chosen"),
    ("", "No session was chosen"),
    (f"id={NAMES['crashed']}", "video of this session was lost"),
    (f"id={NAMES['missing']}", "cannot be read"),
])
async def test_bad_sessions_get_a_clear_message(env: Env, query: str, needle: str) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base, query)
        assert await page.is_visible("#message")
        assert needle in (await page.text_content("#message-text") or "")
        assert not await page.is_visible("#replay-controls")
        if query == f"id={NAMES['crashed']}":  # its skeleton still exists: offer the ghost
            assert await page.is_visible("#message-ghost")
        assert not errors, errors


async def test_seek_past_the_end_and_bad_speeds_are_refused_on_the_page(
        env: Env, steep: dict[str, Any]) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base, f"id={steep['id']}&t=99&speed=-1")
        await _shown(page, 376)  # the last frame
        toast = await page.text_content("#shell-toast") or ""
        assert "past the end" in toast or "Speed must be" in toast
        for bad in (-1, 0, 0.05, 100, "NaN", None):
            msg = await page.evaluate("(r) => window.replay.player.setRate(r)", bad)
            assert msg and "between 0.1x and 2x" in msg
        assert await page.evaluate("() => window.replay.player.video.playbackRate") == 1
        note = await page.evaluate("() => window.replay.player.seekTime(-5)")
        assert "starts at 0:00" in note
        await _shown(page, 0)
        assert not errors, errors


async def test_deleted_while_open_and_touch_targets(env: Env) -> None:
    sid = NAMES["short"]
    async with chromium() as (_, page, errors):
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await _open(page, env.base, f"id={sid}")
        boxes = await page.eval_on_selector_all(
            "button, a.nav, a.button, input",
            "els => els.filter(e => e.offsetParent).map(e => {"
            " const r = e.getBoundingClientRect();"
            " return [e.id || e.textContent, r.width, r.height]; })")
        assert len(boxes) >= 14
        small = [b for b in boxes if b[1] < 64 or b[2] < 64]
        assert not small, f"touch targets under 64 CSS px: {small}"
        origins = {re.match(r"^(\w+://[^/]+)", u).group(1)  # type: ignore[union-attr]
                   for u in requests if not u.startswith(("data:", "blob:"))}
        assert origins == {env.base}, origins
        status, _ = http("DELETE", f"{env.base}/api/sessions/{sid}")
        assert status == 200
        await page.reload()
        await _open(page, env.base, f"id={sid}")
        assert "does not exist" in (await page.text_content("#message-text") or "")
        assert not errors, errors


def _set_pose(state: Path, sid: int, status: str, analysed: int) -> None:
    """Write a session's pose progress into the catalog the running daemon serves, as the
    backfill does (``sessions.pose_status``, ``frames_analyzed``; the daemon under test has
    pose off, so no backfill of its own touches them)."""
    with contextlib.closing(sqlite3.connect(state / "climbd.db", timeout=30)) as db, db:
        db.execute("UPDATE sessions SET pose_status = ?, frames_analyzed = ? WHERE id = ?",
                   (status, analysed, sid))


async def test_pose_being_analysed_shows_its_progress_without_moving_anything(
        env: Env, steep: dict[str, Any]) -> None:
    sid = steep["id"]
    _, before = http("GET", f"{env.base}/api/sessions/{sid}")
    assert before["pose_status"] == "complete" and before["frame_count"] == 377
    card_badge = f'#list li[data-id="{sid}"] .pose-badge'
    rects = """(sel) => sel.map((s) => {
        const r = document.querySelector(s).getBoundingClientRect();
        return [s, r.x, r.y, r.width, r.height]; })"""
    try:
        _set_pose(env.state, sid, "backfilling", 94)  # 94 / 377 frames: 24 %
        async with chromium() as (browser, page, errors):
            sessions = await browser.new_page(viewport={"width": 390, "height": 844},
                                              extra_http_headers=auth_headers(env.base))
            await sessions.goto(f"{env.base}/ui/sessions.html")
            await wait_js(sessions, "(s) => document.querySelector(s)", arg=card_badge)
            assert (await sessions.text_content(card_badge) or "").endswith("24 %")
            card = [f'#list li[data-id="{sid}"]', f'#list li[data-id="{sid}"] .meta']
            card_before = await sessions.evaluate(rects, card)

            await _open(page, env.base, f"id={sid}")
            await _shown(page, 0)
            assert await page.is_visible("#pose-badge")
            assert await page.text_content("#pose-badge") == "Analysing pose… 24 %"
            parts = ["#stage", "#replay-controls", "#timeline", "#play"]
            page_before = await page.evaluate(rects, parts)

            _set_pose(env.state, sid, "backfilling", 283)  # 75 %
            await wait_js(page, "() => document.getElementById('pose-badge').textContent"
                                ".endsWith('75 %')", timeout=10)
            await wait_js(sessions, "(s) => document.querySelector(s).textContent"
                                    ".endsWith('75 %')", timeout=10, arg=card_badge)
            requests = await page.evaluate("() => window.replay.player.poses.stats.requests")

            _set_pose(env.state, sid, "complete", before["frames_analyzed"])
            await wait_js(page, "() => document.getElementById('pose-badge').hidden", timeout=10)
            await wait_js(sessions, "(s) => !document.querySelector(s)", timeout=10,
                          arg=card_badge)
            # the finished pose is fetched again (the windows seen while analysing were partial)
            await wait_js(page, "(n) => window.replay.player.poses.stats.requests > n",
                          timeout=10, arg=requests)
            assert await page.evaluate(rects, parts) == page_before, "the replay page moved"
            assert await sessions.evaluate(rects, card) == card_before, "the card moved"
            assert not errors, errors
    finally:
        _set_pose(env.state, sid, "complete", before["frames_analyzed"])
