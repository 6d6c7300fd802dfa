"""Ghost over live against a real ``climbd run`` (live source: a looped clip; recorded
sessions: ingested clips).

- Python viewers (aiortc, ICE on 127.0.0.1 only) send ghost controls on the ``landmarks``
  data channel and time the ghost poses they receive against the stored timestamps.
- Headless Chromium, inside a private network namespace (``unshare -n``: only loopback
  exists, as in tests/test_live_browser.py), plays a ghost on the replay page and the test
  reads the ghost skeleton's pixels off the page.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from climbd.ghost import KIND_GHOST, GhostMessage, decode_ghost
from tests.conftest import STEEPWALL, auth_headers, http, run_in_private_netns
from tests.replay_support import CHROMIUM, NAMES, Env, chromium, start_daemon, wait_js
from tests.whep_viewer import Viewer

pytestmark = [pytest.mark.browser, pytest.mark.timing]  # wall-clock rates and delays

IN_NETNS = os.environ.get("CLIMBD_TEST_NETNS") == "1"
SDP = {"Content-Type": "application/sdp"}
FRAME_TICKS = 90000 // 25  # the live source (steepwall) runs at 25 fps


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not STEEPWALL.exists():
        pytest.skip("test media missing")
    e = start_daemon(tmp_path_factory.mktemp("ghost-live"), source=STEEPWALL,
                     extra_config="[recording]\npre_roll_s = 5.0\n")
    yield e
    e.daemon.stop()


@pytest.fixture(scope="module")
def stored(env: Env) -> dict[int, dict[str, Any]]:
    """Stored rows of the sessions used as ghosts: frame -> (t, image landmarks)."""
    out = {}
    for name in ("steepwall", "crashed"):
        sid = NAMES[name]
        _, p = http("GET", f"{env.base}/api/sessions/{sid}/poses")
        out[sid] = {f: (t, np.array([[math.nan if v is None else v for v in lm] for lm in im]))
                    for f, t, im in zip(p["frames"], p["t"], p["image"], strict=True)}
    return out


class GhostViewer(Viewer):
    """A viewer that keeps ghost messages apart, with their arrival time."""

    def __init__(self) -> None:
        super().__init__(host_candidates=["127.0.0.1"])
        self.ghosts: list[tuple[float, GhostMessage]] = []
        assert self.channel is not None
        self.channel.remove_all_listeners("message")
        self.channel.on("message", self._split)

    def _split(self, data: str | bytes) -> None:
        if isinstance(data, bytes) and data[:1] == bytes([KIND_GHOST]):
            self.ghosts.append((time.monotonic(), decode_ghost(data)))
        else:
            self._on_message(data)

    def control(self, **fields: Any) -> None:
        self.send(json.dumps({"type": "ghost", **fields}))

    def replies(self, kind: str) -> list[dict[str, Any]]:
        return [t for t in self.texts if t.get("type") == kind]

    def playing(self, since: float = 0.0) -> list[tuple[float, GhostMessage]]:
        return [(a, g) for a, g in self.ghosts if not g.still and a >= since]


@pytest.fixture
async def viewer(env: Env) -> AsyncIterator[GhostViewer]:
    v = GhostViewer()
    offer = await v.offer()
    async with aiohttp.ClientSession(headers=auth_headers(env.base)) as s:
        async with s.post(env.base + "/api/whep", data=offer, headers=SDP) as r:
            answer = await r.text()
            assert r.status == 201, answer
            location = r.headers["Location"]
        await v.accept(answer)
        assert await v.wait_for(lambda: v.hello is not None and v.hello["rtp_origin"] is not None
                                and v.frames > 10, 20), "no live video"
        yield v
        await v.close()
        async with s.delete(env.base + location):
            pass


def _pace(rows: list[tuple[float, GhostMessage]]) -> tuple[float, float]:
    """(slope, p95 residual in s) of arrival time against stored session time."""
    t = np.array([g.t for _, g in rows])
    arrived = np.array([a for a, _ in rows])
    slope, intercept = np.polyfit(t, arrived, 1)
    return float(slope), float(np.percentile(np.abs(arrived - (slope * t + intercept)), 95))


async def test_ghost_is_paced_by_the_recorded_timestamps(
        viewer: GhostViewer, stored: dict[int, dict[str, Any]]) -> None:
    sid = NAMES["steepwall"]
    rows_of = stored[sid]
    for seq, (speed, seconds) in enumerate(((1.0, 3.0), (0.5, 3.0)), 1):
        start = time.monotonic()
        viewer.control(action="play", session_id=sid, t=2.0, speed=speed, seq=seq)
        # `seconds` of playback: that many seconds of the 25 fps recording, at `speed`
        want = int(seconds * 25 * speed)
        assert await viewer.wait_for(
            lambda since=start + 0.2, want=want: len(viewer.playing(since=since)) >= want,
            seconds * 3 + 5)
        rows = viewer.playing(since=start + 0.2)
        assert len(rows) >= seconds * 25 * speed * 0.7, len(rows)
        slope, resid = _pace(rows)
        # a sender pacing by a fixed interval instead of the stored times would be off here
        assert slope == pytest.approx(1 / speed, rel=0.03), (speed, slope)
        assert resid < 0.04, (speed, resid)
        for _, g in rows:  # each message is the stored row of its frame
            t, image = rows_of[g.frame]
            assert g.t == pytest.approx(t, abs=0.0006)
            assert g.landmarks is not None
            assert np.allclose(g.landmarks[:, :2], image[:, :2], atol=2e-4)
        frames = [g.frame for _, g in rows]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)
    # the ghost poses are stamped on this viewer's live RTP clock: each falls just before
    # a live frame (the one captured after it fell due)
    live = sorted({f.rtp for f in viewer.received})
    stamped = [g for _, g in viewer.playing() if g.rtp]
    assert len(stamped) > 50
    inside = [g for g in stamped if live[0] <= g.timestamp <= live[-1]]
    gaps = [min(r - g.timestamp for r in live if r >= g.timestamp) for g in inside]
    assert len(gaps) > 40 and max(gaps) <= FRAME_TICKS * 2, max(gaps)


async def test_pause_seek_loop_and_state(viewer: GhostViewer) -> None:
    sid = NAMES["steepwall"]
    viewer.control(action="play", session_id=sid, t=14.0, loop=True, seq=1)

    def looped() -> bool:
        laps = [g.t for _, g in viewer.playing()]
        return bool(laps) and max(laps) > 14.9 and min(laps[len(laps) // 2:]) < 1.0

    assert await viewer.wait_for(looped, 10), "no loop back to 0"
    laps = [g.t for _, g in viewer.playing()]
    assert max(laps) > 14.9 and min(laps[len(laps) // 2:]) < 1.0, "no loop back to 0"
    viewer.control(action="pause", seq=2)
    viewer.control(action="seek", t=7.5, seq=3)
    assert await viewer.wait_for(
        lambda: any(s.get("seq") == 3 for s in viewer.replies("ghost_state")), 5)
    state = [s for s in viewer.replies("ghost_state") if s.get("seq") == 3][-1]
    assert state["state"] == "paused" and state["t"] == pytest.approx(7.5, abs=0.01)
    await asyncio.sleep(0.1)
    still = [g for _, g in viewer.ghosts if g.still]
    assert still and still[-1].t == pytest.approx(7.48, abs=0.05)  # the frame shown at 7.5 s
    before = len(viewer.playing())
    await asyncio.sleep(1.0)
    assert len(viewer.playing()) == before  # paused: nothing more
    viewer.control(action="stop", seq=4)
    assert await viewer.wait_for(lambda: viewer.replies("ghost_state")[-1]["state"] == "stopped", 5)


async def test_bad_controls_are_answered_and_nothing_breaks(env: Env, viewer: GhostViewer
                                                           ) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"action": "play", "session_id": 999999, "seq": 1}, "no session with id 999999"),
        ({"action": "play", "session_id": NAMES["steepwall"], "t": 99.0, "seq": 2},
         "past the end"),
        ({"action": "speed", "speed": -1, "seq": 3}, "speed must be between"),
        ({"action": "speed", "speed": 1e12, "seq": 4}, "speed must be between"),
        ({"action": "seek", "t": "later", "seq": 5}, "t:"),
        ({"action": "dance", "seq": 6}, "action"),
    ]
    for fields, _ in bad:
        viewer.control(**fields)
        await asyncio.sleep(0.25)  # error replies are rate limited (5/s)
    viewer.send("{not json")
    viewer.send(json.dumps({"type": "ghost", "action": "play", "session_id": "2"}))
    assert await viewer.wait_for(lambda: len(viewer.replies("error")) >= len(bad) + 2, 10)
    errors = {e.get("seq"): e["error"] for e in viewer.replies("error")}
    for fields, needle in bad:
        assert needle in errors[fields["seq"]], (fields, errors)
    # the channel and the daemon are fine: a ping is answered, the live stream goes on, and
    # a good control still works
    viewer.send(json.dumps({"type": "ping", "id": 7}))
    assert await viewer.wait_for(lambda: any(t.get("type") == "pong" for t in viewer.texts), 5)
    frames = viewer.frames
    viewer.control(action="play", session_id=NAMES["crashed"], seq=10)  # its video was lost,
    assert await viewer.wait_for(lambda: len(viewer.playing()) > 10, 10)  # its poses were not
    assert viewer.frames > frames and viewer.connection_state == "connected"
    assert http("GET", env.base + "/api/health")[0] == 200


async def test_armed_ghost_starts_with_the_recording_aligned(env: Env, viewer: GhostViewer
                                                            ) -> None:
    sid = NAMES["steepwall"]
    viewer.control(action="arm", session_id=sid, seq=1)
    assert await viewer.wait_for(
        lambda: any(s["state"] == "armed" for s in viewer.replies("ghost_state")), 5)
    await asyncio.sleep(0.5)
    assert not viewer.playing()
    pressed = time.monotonic()
    status, rec = http("POST", env.base + "/api/recordings/start", {"pre_roll_s": 2.0})
    assert status == 201, rec
    try:
        assert await viewer.wait_for(lambda: len(viewer.playing()) > 40, 10)
    finally:
        http("POST", env.base + "/api/recordings/stop", {})
    assert viewer.replies("ghost_state")[-1]["aligned_to"] == rec["id"]
    hello = viewer.hello
    assert hello is not None
    # ghost time t is shown on the live frame captured at start + t: the start is the new
    # recording's first frame (in its pre-roll), the same for every ghost pose
    starts = [hello["epoch"] + ((g.timestamp - hello["rtp_origin"]) % 2**32) / 90000 - g.t
              for _, g in viewer.playing() if g.rtp]
    assert np.ptp(starts) < 0.02, np.ptp(starts)
    first_frame = pressed - rec["pre_roll_s"]  # the recording's first keyframe, measured
    assert np.mean(starts) == pytest.approx(first_frame, abs=0.15)
    assert viewer.playing()[0][1].t == pytest.approx(rec["pre_roll_s"], abs=0.3)
    # the new recording (variable frame rate: capture times) gets an exact frame table too
    status, table = http("GET", f"{env.base}/api/sessions/{rec['id']}/frames")
    assert status == 200
    import av

    with av.open(str(env.state / "sessions" / str(rec["id"]) / "video.mp4")) as c:
        decoded = [float(f.time) for f in c.decode(c.streams.video[0])]
    assert len(decoded) > 50 and np.allclose(table["times"], decoded, atol=1e-6)


# -- Chromium, in a private network namespace -------------------------------------------------


@pytest.mark.skipif(IN_NETNS, reason="already inside the namespace")
@pytest.mark.timeout(1500)  # runs a whole suite (the inner tests have their own)
def test_ghost_page_suite_in_a_private_network_namespace(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to make a network namespace")
    if not CHROMIUM.exists() or not STEEPWALL.exists():
        pytest.skip("Debian chromium or the test media is missing")
    inner = [n for n in globals() if n.startswith("test_inner_")]
    run_in_private_netns(Path(__file__), inner, tmp_path)


inner = pytest.mark.skipif(not IN_NETNS, reason="runs inside the network namespace only")

GHOST_SNAPSHOT = """() => {
  const g = window.replay.ghost;
  const o = g.ghostOverlay;
  const last = o.last;
  const px = (x, y) => {
    const d = o.ctx.getImageData(Math.round(x * o.dpr), Math.round(y * o.dpr), 1, 1).data;
    return [d[0], d[1], d[2], d[3]];
  };
  const r = last.rect;
  return { frame: last.ghostFrame, points: last.points, rect: r,
           size: [o.canvas.clientWidth, o.canvas.clientHeight],
           atPoints: last.points.map((q) => (q ? px(q[0], q[1]) : null)),
           corners: [px(r.left + 3, r.top + 3), px(r.left + r.width - 3, r.top + 3),
                     px(r.left + 3, r.top + r.height - 3)] };
}"""


@inner
async def test_inner_ghost_is_drawn_over_live_at_the_recorded_pace(
        env: Env, stored: dict[int, dict[str, Any]]) -> None:
    sid = NAMES["steepwall"]
    async with chromium() as (_, page, errors):
        await page.goto(f"{env.base}/ui/replay.html?id={sid}&mode=ghost")
        await wait_js(page, "() => window.replay.ghost && window.replay.ghost.stats.liveFrames > 10"
                            " && window.replay.ghost.state.state === 'paused'", timeout=60)
        await page.click("#ghost-play")
        await wait_js(page, "() => window.replay.ghost.state.state === 'playing'")
        await page.wait_for_timeout(4000)
        log = await page.evaluate("() => window.replay.ghost.stats.ghostLog.slice()")
        rows = [(a / 1000, g_t) for a, g_t, _f, _ts, still in log if not still]
        assert len(rows) > 70
        t = np.array([r[1] for r in rows])
        arrived = np.array([r[0] for r in rows])
        slope, icpt = np.polyfit(t, arrived, 1)
        assert slope == pytest.approx(1.0, rel=0.03), slope
        assert np.percentile(np.abs(arrived - (slope * t + icpt)), 95) < 0.06
        # what is on the page: the stored skeleton of the ghost frame, in the ghost colour
        snap = await page.evaluate(GHOST_SNAPSHOT)
        _, image = stored[sid][snap["frame"]]
        r = snap["rect"]
        w, h = snap["size"]
        checked = 0
        for i, q in enumerate(snap["points"]):
            if image[i, 3] < 0.3:
                continue
            x, y = r["left"] + image[i, 0] * r["width"], r["top"] + image[i, 1] * r["height"]
            assert q is not None and math.hypot(q[0] - x, q[1] - y) < 1.0  # 1e-4 fixed point
            if 2 <= x <= w - 2 and 2 <= y <= h - 2:
                rgb = snap["atPoints"][i]
                assert rgb[3] > 200 and abs(rgb[0] - 0xFF) < 30 and abs(rgb[1] - 0x2B) < 40 \
                    and abs(rgb[2] - 0xD6) < 30, (i, rgb)  # magenta, not the live cyan/orange
                checked += 1
        assert checked >= 10
        assert all(c[3] == 0 for c in snap["corners"]), snap["corners"]
        # half speed from the page's button: twice the wall time per recorded second
        await page.click('[data-ghost-speed="0.5"]')
        await wait_js(page, "() => window.replay.ghost.state.speed === 0.5")
        mark = await page.evaluate("() => performance.now()")
        await page.wait_for_timeout(3000)
        log = await page.evaluate("() => window.replay.ghost.stats.ghostLog.slice()")
        rows = [(a / 1000, g_t) for a, g_t, _f, _ts, still in log if not still and a > mark + 200]
        slope = np.polyfit([r[1] for r in rows], [r[0] for r in rows], 1)[0]
        assert slope == pytest.approx(2.0, rel=0.03), slope
        assert not errors, errors


@inner
async def test_inner_ghost_page_bad_input(env: Env) -> None:
    async with chromium() as (_, page, errors):
        # a session whose video was lost still has a ghost
        await page.goto(f"{env.base}/ui/replay.html?id={NAMES['crashed']}")
        await wait_js(page, "() => window.replay.state.message !== null")
        await page.click("#message-ghost")
        await wait_js(page, "() => window.replay.ghost"
                            " && window.replay.ghost.state.state === 'paused'", timeout=60)
        await page.click("#ghost-play")
        await wait_js(page, "() => window.replay.ghost.stats.ghostMessages > 20")
        # seeking past the end from the page is refused with a message
        await page.evaluate("() => window.replay.ghost.seek(500)")
        await wait_js(page, "() => window.replay.ghost.stats.errors.length > 0")
        assert "past the end" in (await page.text_content("#shell-toast") or "")
        # an unknown session: the page says so and offers no ghost
        await page.goto(f"{env.base}/ui/replay.html?id=424242&mode=ghost")
        await wait_js(page, "() => window.replay.state.message !== null")
        assert "does not exist" in (await page.text_content("#message-text") or "")
        assert await page.is_disabled("#mode-ghost")
        assert not errors, errors


@inner
async def test_inner_ghost_at_liftoff_button_says_why_without_live_pose(env: Env) -> None:
    """The "At lift-off" toggle is a touch target; this daemon runs no live pose, so nothing
    could see the climber leave the ground: the tap is refused with the reason on screen and
    the ghost stays as it was (the race itself, with live BlazePose:
    tests/test_ghost_liftoff_live.py; its states: tests/test_ghost_liftoff.py)."""
    sid = NAMES["steepwall"]
    state = "() => window.replay.ghost.state"
    async with chromium() as (_, page, errors):
        await page.goto(f"{env.base}/ui/replay.html?id={sid}&mode=ghost")
        await wait_js(page, "() => window.replay.ghost && window.replay.ghost.stats.liveFrames > 5"
                            " && window.replay.ghost.state.state === 'paused'", timeout=60)
        assert await page.get_attribute("#ghost-liftoff", "aria-pressed") == "false"
        box = await page.locator("#ghost-liftoff").bounding_box()
        assert box is not None and box["height"] >= 48  # a touch target for chalky hands
        before = await page.evaluate("() => window.replay.ghost.stats.ghostLog"
                                     ".filter((r) => !r[4]).length")
        await page.click("#ghost-liftoff")
        await wait_js(page, "() => window.replay.ghost.stats.errors.some("
                            "(e) => e.code === 'ghost-no-liftoff')")
        toast = await page.text_content("#shell-toast") or ""
        assert "cannot start at lift-off: live pose is off" in toast, toast
        st = await page.evaluate(state)
        assert st["state"] == "paused" and st["arm_at"] is None and st["race"] is None, st
        assert await page.get_attribute("#ghost-liftoff", "aria-pressed") == "false"
        after = await page.evaluate("() => window.replay.ghost.stats.ghostLog"
                                    ".filter((r) => !r[4]).length")
        assert after == before  # nothing played
        assert not errors, errors
