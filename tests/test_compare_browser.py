"""The compare page in headless Chromium against a real ``climbd run`` (HTTP on 127.0.0.1).

Session A is the ingested steep-wall clip (attempt from 0.0 s); session B is the same climb
with 3 s of the empty wall before it (its video re-encoded with PyAV, its poses A's shifted
by 3 s, its attempt detected by the daemon at ~3.0 s). After a seek, play + pause and frame
steps, both videos must show frames at the same offset from their attempt starts (± 1
frame), each with its skeleton on the body: skeleton-coloured pixels at the drawn landmarks
and, under them, the picture of the climber (the drawn landmarks match the stored ones of
the frame on screen, and the pixels there differ from the empty wall's).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from tests.attempts_support import empty_wall_clip
from tests.conftest import STEEPWALL, http
from tests.replay_support import NAMES, PLAYER_STATE, Env, chromium, start_daemon, wait_js

pytestmark = pytest.mark.browser

SHIFT_S = 3.0


def _add_shifted_session(state: Path) -> None:
    """Session B: 3 s of empty wall, then the steep-wall clip; A's poses shifted by 3 s."""
    from climbd.attempt_service import analyse_session
    from climbd.ingest import decode_rgb_frames
    from climbd.storage import Database
    from climbd.visibility import SYSTEM, viewing
    from tests.export_support import add_video_session

    tmp = state.parent / "b-src"
    tmp.mkdir(exist_ok=True)
    wall = empty_wall_clip(tmp / "wall.mp4", seconds=SHIFT_S)
    out = tmp / "shifted.mp4"
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width = 720, 540
        s.pix_fmt = "yuv420p"
        s.options = {"g": "25", "preset": "veryfast", "crf": "20"}
        for path in (wall, STEEPWALL):
            for _, _, rgb in decode_rgb_frames(path):
                for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)

    async def go() -> None:
        db = await Database.open(state / "climbd.db")
        try:
            with viewing(SYSTEM):  # the test acts for the appliance (climbd.visibility)
                await fill(db)
        finally:
            await db.close()

    async def fill(db: Database) -> None:
        src = await db.poses(NAMES["steepwall"])
        rec = await add_video_session(db, state, out, name="steepwall later")
        await db.append_poses(rec.id, src.frames + round(SHIFT_S * 25), src.times + SHIFT_S,
                              src.image, src.world, frame_count=rec.frame_count,
                              duration_s=rec.duration_s)
        await analyse_session(db, rec.id)
        await analyse_session(db, NAMES["steepwall"])

    asyncio.run(go())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Env]:
    e = start_daemon(tmp_path_factory.mktemp("compare-browser"), prepare=_add_shifted_session)
    yield e
    e.daemon.stop()


@pytest.fixture(scope="module")
def ids(env: Env) -> dict[str, Any]:
    status, page = http("GET", f"{env.base}/api/sessions?limit=50")
    assert status == 200, page
    b = next(s for s in page["items"] if s["name"] == "steepwall later")
    a = next(s for s in page["items"] if s["id"] == NAMES["steepwall"])
    return {"a": a, "b": b}


SNAP = """() => {
  const c = window.compare;
  const one = (side) => {
    const p = side.player, o = p.overlay, last = o.last;
    const px = (x, y) => {
      const d = o.ctx.getImageData(
        Math.round(x * o.dpr) - 1, Math.round(y * o.dpr) - 1, 3, 3).data;
      let best = [0, 0, 0, 0];
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > best[3]) best = [d[i], d[i + 1], d[i + 2], d[i + 3]];
      }
      return best;
    };
    const grab = document.createElement("canvas");
    grab.width = p.video.videoWidth; grab.height = p.video.videoHeight;
    grab.getContext("2d").drawImage(p.video, 0, 0);
    return {
      index: p.shown ? p.shown.index : null, time: p.shown ? side.times[p.shown.index] : null,
      start: side.start, fps: p.fps, drawnFor: last ? last.frameTs : null,
      exact: last ? last.exact : null, points: last ? last.points : [],
      rect: last ? last.rect : null,
      pixels: last ? last.points.map((q) => (q ? px(q[0], q[1]) : null)) : [],
      png: grab.toDataURL("image/png"),
    };
  };
  return { a: one(c.A), b: one(c.B), resyncs: c.resyncs, mode: c.mode, ghost: c.ghostLast,
           ghostPoints: c.ghost && c.ghost.last ? c.ghost.last.points : [] };
}"""

SETTLED = """() => {
  const c = window.compare;
  if (!c || !c.ready) return false;
  const ok = (side) => {
    const p = side.player;
    return p.shown && !p.video.seeking && (p.target === null || p.target === p.shown.index)
      && p.queued === null
      && p.overlay.last && p.overlay.last.frameTs === p.shown.index && p.waitingPose === null;
  };
  return ok(c.A) && ok(c.B) && c.A.player.video.paused && c.B.player.video.paused;
}"""


STATE = f"""() => {{ const c = window.compare, one = {PLAYER_STATE};
  return c && c.ready ? {{ A: one(c.A.player), B: one(c.B.player) }} : null; }}"""


async def _settled(page: Any) -> dict[str, Any]:
    try:
        await wait_js(page, SETTLED, timeout=30)
        await page.wait_for_timeout(150)  # one more frame callback: nothing moves any more
        await wait_js(page, SETTLED, timeout=30)
    except AssertionError as exc:  # say which player is stuck, and on what
        raise AssertionError(f"not settled: {await page.evaluate(STATE)}") from exc
    return dict(await page.evaluate(SNAP))


def _png(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def _check(snap: dict[str, Any], wall: np.ndarray) -> None:
    a, b = snap["a"], snap["b"]
    oa, ob = a["time"] - a["start"], b["time"] - b["start"]
    frame = max(1 / a["fps"], 1 / b["fps"])
    assert abs(oa - ob) <= frame + 1e-3, (oa, ob)
    for side in (a, b):
        assert side["drawnFor"] == side["index"] and side["exact"], side["index"]
        pts = [(q, px) for q, px in zip(side["points"], side["pixels"], strict=True) if q]
        assert len(pts) >= 15, "skeleton drawn"
        coloured = [px for _, px in pts if px[3] > 200 and max(px[:3]) > 150]
        assert len(coloured) >= 0.9 * len(pts), "skeleton pixels at the landmarks"
        # under the skeleton: the climber, not the wall (the frame differs from the empty
        # wall around the hips and shoulders)
        img = _png(side["png"]).astype(float)
        r = side["rect"]
        diffs = []
        for i in (11, 12, 23, 24):
            q = side["points"][i]
            if q is None:
                continue
            x = int((q[0] - r["left"]) / r["width"] * img.shape[1])
            y = int((q[1] - r["top"]) / r["height"] * img.shape[0])
            y0, y1, x0, x1 = max(0, y - 6), y + 7, max(0, x - 6), x + 7
            diffs.append(float(np.abs(img[y0:y1, x0:x1] - wall[y0:y1, x0:x1]).mean()))
        assert diffs and np.median(diffs) > 12, ("no body under the skeleton", diffs)


@pytest.fixture(scope="module")
def wall(env: Env) -> np.ndarray:
    from climbd.ingest import decode_rgb_frames

    clip = env.state.parent / "b-src" / "wall.mp4"
    return next(rgb for _, _, rgb in decode_rgb_frames(clip)).astype(float)


async def test_side_by_side_stays_aligned_through_seek_play_and_step(
        env: Env, ids: dict[str, Any], wall: np.ndarray, tmp_path: Path) -> None:
    a, b = ids["a"], ids["b"]
    assert a["attempts"][0]["start_s"] == pytest.approx(0.0, abs=0.05)
    assert b["attempts"][0]["start_s"] == pytest.approx(SHIFT_S, abs=0.2)
    async with chromium() as (_, page, errors):
        await page.goto(f"{env.base}/ui/compare.html?a={a['id']}&b={b['id']}")
        snap = await _settled(page)
        _check(snap, wall)
        assert snap["a"]["time"] == pytest.approx(0.0, abs=0.05)
        # seek: the timeline to frame 150 of A (6.0 s into both attempts)
        await page.evaluate("""() => { const t = document.getElementById('timeline');
            t.value = '150'; t.dispatchEvent(new Event('input')); }""")
        snap = await _settled(page)
        assert snap["a"]["index"] == 150
        _check(snap, wall)
        # play 1.5 s at 1x, then pause
        await page.click("#play")
        await wait_js(page, "() => !window.compare.A.player.video.paused")
        await page.wait_for_timeout(1500)
        await page.click("#play")
        snap = await _settled(page)
        assert snap["a"]["index"] > 170, snap["a"]["index"]
        _check(snap, wall)
        # steps: three frames forward, one back
        for sel in ("#step-fwd", "#step-fwd", "#step-fwd", "#step-back"):
            before = snap["a"]["index"]
            await page.click(sel)
            snap = await _settled(page)
            assert snap["a"]["index"] == before + (1 if sel == "#step-fwd" else -1)
            _check(snap, wall)
        for size in ((1280, 800), (800, 1280), (390, 844)):
            await page.set_viewport_size({"width": size[0], "height": size[1]})
            await page.wait_for_timeout(400)
            await page.screenshot(path=str(tmp_path / f"compare-{size[0]}x{size[1]}.png"))
            assert await page.evaluate(
                "() => document.documentElement.scrollWidth <= innerWidth"), size
        assert not errors, errors


async def test_superposed_draws_a_over_b_at_the_same_offset(
        env: Env, ids: dict[str, Any], tmp_path: Path) -> None:
    a, b = ids["a"], ids["b"]
    async with chromium() as (_, page, errors):
        await page.goto(f"{env.base}/ui/compare.html?a={a['id']}&b={b['id']}&mode=over")
        await wait_js(page, "() => window.compare && window.compare.ready")
        await page.click("#fwd-1s")
        await page.click("#fwd-1s")
        await wait_js(page, """() => { const c = window.compare; const p = c.B.player;
            return p.shown && !p.video.seeking && (p.target === null || p.target === p.shown.index)
              && c.ghostLast
              && c.ghostLast.loaded && c.ghostLast.bIndex === p.shown.index; }""")
        snap = await page.evaluate(SNAP)
        g = snap["ghost"]
        b_frame, a_frame = g["bIndex"], g["aIndex"]
        # same offset from the starts: B's frame - 75 (3 s at 25 fps) is A's frame
        assert abs((b_frame - round(SHIFT_S * 25)) - a_frame) <= 1, g
        assert a_frame == pytest.approx(50, abs=1)
        # A's skeleton lands where B's own skeleton is (same climb, same camera)
        ghost = [q for q in snap["ghostPoints"] if q]
        own = [q for q in snap["b"]["points"] if q]
        assert len(ghost) >= 15 and len(own) >= 15
        gx = np.median([q[0] for q in ghost]), np.median([q[1] for q in ghost])
        ox = np.median([q[0] for q in own]), np.median([q[1] for q in own])
        assert np.hypot(gx[0] - ox[0], gx[1] - ox[1]) < 10, (gx, ox)
        await page.screenshot(path=str(tmp_path / "compare-superposed-1280x800.png"))
        assert not errors, errors


def test_attempt_thumbnail_shows_the_lift_off(env: Env, ids: dict[str, Any],
                                              wall: np.ndarray) -> None:
    b = ids["b"]
    status, jpeg = http("GET", f"{env.base}/api/sessions/{b['id']}/attempts/0/thumbnail")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB).astype(float)
    small = cv2.resize(wall, (img.shape[1], img.shape[0]))
    assert np.abs(img - small).mean() > 3, "the lift-off frame shows the climber, not the wall"
    status, _ = http("GET", f"{env.base}/api/sessions/{b['id']}/attempts/7/thumbnail")
    assert status == 404
    status, _ = http("GET", f"{env.base}/api/sessions/{b['id']}/attempts/x/thumbnail")
    assert status == 404
