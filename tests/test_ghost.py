"""The ghost pacing core (pure, fake clock) and the async player against a fake host.

The pacing tests use recorded-looking timestamps with jitter (a camera's frame times are not
a perfect grid), so a player that paced by a fixed frame interval would fail them.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import numpy as np
import pytest

from climbd.errors import SessionNotFound
from climbd.ghost import (
    KIND_GHOST,
    Due,
    GhostPacer,
    GhostPlayer,
    GhostSession,
    decode_ghost,
    pack_ghost,
)
from climbd.storage.posecodec import PoseSeries

pytestmark = [pytest.mark.unit, pytest.mark.timing]  # wall-clock rates and delays


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def series(n: int = 100, fps: float = 25.0, jitter: float = 0.006, seed: int = 1,
           skip: tuple[int, ...] = ()) -> PoseSeries:
    """``n`` frames at ``fps`` with timing jitter; frames in ``skip`` have no pose row."""
    rng = np.random.default_rng(seed)
    times = np.arange(n) / fps + rng.uniform(-jitter, jitter, n)
    times[0] = 0.0
    times = np.maximum.accumulate(times)
    keep = np.array([i for i in range(n) if i not in skip])
    image = rng.uniform(0.1, 0.9, (n, 33, 5)).astype(np.float32)
    image[:, :, 0] = (np.arange(n) / n)[:, None]  # x encodes the frame
    return PoseSeries(keep, times[keep], image[keep], np.zeros((len(keep), 33, 3)))


def drain(p: GhostPacer, clock: FakeClock, full: PoseSeries, window_s: float | None = None,
          until: float = math.inf, limit: int = 100000) -> list[Due]:
    """Advance the fake clock from due time to due time, loading windows like the player,
    and return every row emitted."""
    out: list[Due] = []
    for _ in range(limit):
        need = p.missing()
        if need is not None:
            end = math.inf if window_s is None or need + window_s >= p.duration \
                else need + window_s
            p.load(full.slice_time(need, None if math.isinf(end) else end), need, end)
            continue
        d = p.next_due()
        if d is None or d.due > until:
            break
        clock.t = max(clock.t, d.due)
        got = p.pop_due()
        assert got is not None
        out.append(got)
    return out


def test_rows_fall_due_at_their_recorded_times() -> None:
    full = series(200)
    clock = FakeClock()
    p = GhostPacer(8.0, clock)
    p.load(full, 0.0, math.inf)
    p.play()
    rows = drain(p, clock, full)
    assert [d.frame for d in rows] == full.frames.tolist()
    assert np.allclose([d.due - 1000.0 for d in rows], full.times, atol=1e-9)
    assert p.skipped == 0 and p.state() == "playing"  # 8 s session, last row at ~7.96 s
    clock.t = 1008.0
    assert p.state() == "ended" and p.next_due() is None


@pytest.mark.parametrize("speed", [0.1, 0.25, 0.5, 2.0])
def test_speed_scales_the_recorded_intervals(speed: float) -> None:
    full = series(120)
    clock = FakeClock()
    p = GhostPacer(5.0, clock, speed=speed)
    p.load(full, 0.0, math.inf)
    p.play()
    rows = drain(p, clock, full)
    assert np.allclose([d.due - 1000.0 for d in rows], full.times / speed, atol=1e-9)


def test_windowed_loading_emits_every_row_once_in_order() -> None:
    full = series(500, skip=tuple(range(100, 180)))  # 3.2 s with nobody in the picture
    clock = FakeClock()
    p = GhostPacer(20.0, clock)
    p.play()
    rows = drain(p, clock, full, window_s=1.0)
    assert [d.frame for d in rows] == full.frames.tolist()
    assert np.allclose([d.due - 1000.0 for d in rows], full.times, atol=1e-9)


def test_pause_freezes_and_play_resumes_without_a_jump() -> None:
    full = series(100)
    clock = FakeClock()
    p = GhostPacer(4.0, clock)
    p.load(full, 0.0, math.inf)
    p.play()
    clock.t += 1.0
    p.pop_due()
    p.pause()
    pos = p.position()
    clock.t += 30.0
    assert p.position() == pytest.approx(pos) and p.next_due() is None
    assert p.state() == "paused"
    p.play()
    d = p.next_due()
    assert d is not None
    # the next row is due exactly as far ahead as it was when paused
    assert d.due - clock.t == pytest.approx(d.t - pos)


def test_seek_and_its_limits() -> None:
    full = series(100)
    clock = FakeClock()
    p = GhostPacer(4.0, clock)
    p.load(full, 0.0, math.inf)
    p.seek(2.0)
    p.play()
    d = p.next_due()
    assert d is not None and d.t >= 2.0 and d.frame == int(np.searchsorted(full.times, 2.0))
    for bad in (-0.1, 4.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="outside the session"):
            p.seek(bad)
    for bad in (0.0, -1.0, 0.05, 2.5, 1e9, math.nan, math.inf):
        with pytest.raises(ValueError, match="speed must be between"):
            p.set_speed(bad)


def test_speed_change_keeps_the_position() -> None:
    full = series(100)
    clock = FakeClock()
    p = GhostPacer(4.0, clock)
    p.load(full, 0.0, math.inf)
    p.play()
    clock.t += 1.5
    p.set_speed(0.25)
    assert p.position() == pytest.approx(1.5)
    clock.t += 2.0
    assert p.position() == pytest.approx(2.0)


def test_a_late_tick_shows_the_newest_row_and_counts_the_rest() -> None:
    full = series(100)
    clock = FakeClock()
    p = GhostPacer(4.0, clock)
    p.load(full, 0.0, math.inf)
    p.play()
    clock.t += 1.0
    d = p.pop_due()
    assert d is not None
    assert d.frame == int(np.searchsorted(full.times, 1.0, side="right")) - 1
    assert p.skipped == d.frame  # rows 0..frame-1 were passed over


def test_start_at_a_past_clock_time_aligns_with_a_recording_that_began_in_its_preroll() -> None:
    full = series(250)
    clock = FakeClock()
    p = GhostPacer(10.0, clock)
    p.load(full, 0.0, math.inf)
    p.start_at(clock.t - 3.0, 0.0)  # the new recording's first frame was 3 s ago
    assert p.position() == pytest.approx(3.0)
    d = p.pop_due()
    assert d is not None and 2.9 < d.t <= 3.0


def test_loop_wraps_with_continuous_due_times() -> None:
    full = series(50)  # 2 s
    clock = FakeClock()
    p = GhostPacer(2.0, clock, loop=True)
    p.play()
    rows = drain(p, clock, full, window_s=0.5, until=1000.0 + 6.5)
    laps = [d.lap for d in rows]
    assert laps[0] == 0 and max(laps) == 3
    assert [d.frame for d in rows[:150]] == full.frames.tolist() * 3
    expected = np.concatenate([full.times + 2.0 * k for k in range(4)])[:len(rows)]
    assert np.allclose([d.due - 1000.0 for d in rows], expected, atol=1e-9)
    p.set_loop(False)
    assert p.position() < 2.0


def test_ghost_message_round_trip() -> None:
    image = series(1).image[0]
    data = pack_ghost(image, timestamp=2**32 + 5, rtp=True, t=12.3456, frame=309, still=True)
    assert data[0] == KIND_GHOST and len(data) == 16 + 33 * 8
    m = decode_ghost(data)
    assert (m.timestamp, m.rtp, m.still, m.frame) == (5, True, True, 309)
    assert m.t == pytest.approx(12.346)
    assert m.landmarks is not None
    assert np.allclose(m.landmarks[:, :3], image[:, :3], atol=1e-4)
    assert np.allclose(m.landmarks[:, 3:], image[:, 3:], atol=0.003)
    empty = decode_ghost(pack_ghost(None, timestamp=1, rtp=False, t=0, frame=0))
    assert empty.landmarks is None
    for bad in (b"", data[:-1], b"\x01" + data[1:]):
        with pytest.raises(ValueError):
            decode_ghost(bad)


# -- the async player ----------------------------------------------------------------------


class FakeHost:
    """A viewer: records what the player sends, with the (real) clock time it was sent."""

    def __init__(self, sessions: dict[int, tuple[PoseSeries, float]]):
        self.sessions = sessions
        self.is_open = True
        self.sent: list[tuple[float, Any]] = []
        self.recording: tuple[int, float] | None = None
        self.loads: list[tuple[int, float, float | None]] = []

    async def session(self, session_id: int) -> GhostSession:
        if session_id not in self.sessions:
            raise SessionNotFound(session_id)
        s, duration = self.sessions[session_id]
        return GhostSession(session_id, duration, 25.0, f"s{session_id}", len(s))

    async def poses(self, session_id: int, start: float, end: float | None) -> PoseSeries:
        self.loads.append((session_id, start, end))
        return self.sessions[session_id][0].slice_time(start, end)

    def send(self, data: str | bytes) -> bool:
        now = time.monotonic()
        self.sent.append((now, json.loads(data) if isinstance(data, str) else decode_ghost(data)))
        return True

    def backlog(self) -> int:
        return 0

    def stamp(self, clock_time: float) -> tuple[int, bool]:
        return round(clock_time * 90000) & 0xFFFFFFFF, False

    def recording_start(self) -> tuple[int, float] | None:
        return self.recording

    def poses_sent(self) -> list[tuple[float, Any]]:
        return [(t, m) for t, m in self.sent if not isinstance(m, dict)]

    def json_sent(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.sent if isinstance(m, dict) and m["type"] == kind]


async def _until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_player_sends_rows_at_the_recorded_pace_across_windows() -> None:
    full = series(75)  # 3 s at 25 fps with jitter
    host = FakeHost({7: (full, 3.0)})
    player = GhostPlayer(host, window_s=1.0)
    assert player.control({"type": "ghost", "action": "play", "session_id": 7, "seq": 1}) is None
    await _until(lambda: any(m["state"] == "ended" for m in host.json_sent("ghost_state")))
    rows = host.poses_sent()
    frames = [m.frame for _, m in rows if not m.still]
    # in recorded order, nothing twice; a row too late to be useful is skipped (counted),
    # never sent out of turn — on a loaded machine a few may be
    assert frames == sorted(set(frames)) and set(frames) <= set(full.frames.tolist())
    stats = player.stats()
    assert len(frames) + stats["skipped"] + stats["dropped"] >= 75 - 1, stats
    assert len(frames) >= 60, stats
    # pacing: send times against the stored timestamps (a straight line of slope 1)
    ts = np.array([m.t for _, m in rows if not m.still])
    sent = np.array([t for t, m in rows if not m.still])
    slope, intercept = np.polyfit(ts, sent, 1)
    assert slope == pytest.approx(1.0, abs=0.02)
    resid = np.abs(sent - (slope * ts + intercept))
    assert np.percentile(resid, 95) < 0.03, resid
    assert len(host.loads) >= 3  # loaded window by window
    states = host.json_sent("ghost_state")
    assert states[0]["seq"] == 1 and states[-1]["state"] == "ended"
    player.close()
    await player.wait_closed()


@pytest.mark.parametrize(("message", "needle"), [
    ({"type": "ghost"}, "action"),
    ({"type": "ghost", "action": "fly"}, "action"),
    ({"type": "ghost", "action": "seek"}, 'needs "t"'),
    ({"type": "ghost", "action": "seek", "t": -1}, "t"),
    ({"type": "ghost", "action": "seek", "t": "soon"}, "t"),
    ({"type": "ghost", "action": "speed", "speed": -2}, "speed must be between"),
    ({"type": "ghost", "action": "speed", "speed": 1e9}, "speed must be between"),
    ({"type": "ghost", "action": "speed", "speed": 0}, "speed must be between"),
    ({"type": "ghost", "action": "speed"}, 'needs "speed"'),
    ({"type": "ghost", "action": "loop", "loop": "yes"}, "loop"),
    ({"type": "ghost", "action": "play", "session_id": True}, "session_id"),
    ({"type": "ghost", "action": "play", "session_id": -3}, "session_id"),
    ({"type": "ghost", "action": "play", "bogus": 1}, "bogus"),
    ({"type": "ghost", "action": "arm"}, 'needs "session_id"'),
])
async def test_malformed_controls_get_an_error_reply(message: dict[str, Any],
                                                    needle: str) -> None:
    player = GhostPlayer(FakeHost({}))
    reply = player.control({**message, "seq": 4})
    assert reply is not None and reply["type"] == "error" and reply["seq"] == 4
    assert needle in reply["error"], reply
    assert player._task is None  # nothing was queued


async def test_bad_controls_at_run_time_are_answered_and_the_player_survives() -> None:
    full = series(50)
    host = FakeHost({1: (full, 2.0), 2: (PoseSeries.empty(), 2.0)})
    player = GhostPlayer(host)
    for seq, msg in enumerate([
        {"action": "play", "session_id": 99},            # unknown session
        {"action": "play", "session_id": 2},             # no pose rows
        {"action": "pause"},                             # nothing loaded
        {"action": "play", "session_id": 1, "t": 0.5},
        {"action": "seek", "t": 50.0},                   # past the end
    ]):
        assert player.control({"type": "ghost", **msg, "seq": seq}) is None
    await _until(lambda: len(host.json_sent("error")) >= 4 and host.poses_sent())
    errors = host.json_sent("error")
    assert [e["seq"] for e in errors] == [0, 1, 2, 4]
    assert "no session with id 99" in errors[0]["error"]
    assert "no pose" in errors[1]["error"]
    assert "needs a \"session_id\"" in errors[2]["error"]
    assert "past the end" in errors[3]["error"] and "2.00 s" in errors[3]["error"]
    assert player.pacer is not None and player.pacer.playing
    assert not player._closed
    player.close()
    await player.wait_closed()


async def test_armed_ghost_starts_aligned_with_the_next_recording() -> None:
    full = series(150)
    host = FakeHost({3: (full, 6.0)})
    player = GhostPlayer(host)
    player.control({"type": "ghost", "action": "arm", "session_id": 3})
    await _until(lambda: any(s["state"] == "armed" for s in host.json_sent("ghost_state")))
    await asyncio.sleep(0.2)
    assert not [m for _, m in host.poses_sent() if not m.still]  # waits for the recording
    start = time.monotonic() - 1.5  # a recording whose first frame (pre-roll) was 1.5 s ago
    host.recording = (42, start)
    await _until(lambda: len([m for _, m in host.poses_sent() if not m.still]) >= 20)
    live = [(t, m) for t, m in host.poses_sent() if not m.still]
    # every row goes out when the new recording reaches the same session time
    for sent_at, m in live:
        assert sent_at - start == pytest.approx(m.t, abs=0.05)
    assert live[0][1].t == pytest.approx(1.5, abs=0.1)
    assert host.json_sent("ghost_state")[-1]["aligned_to"] == 42
    player.close()
    await player.wait_closed()


async def test_player_ends_when_the_viewer_goes() -> None:
    host = FakeHost({1: (series(50), 2.0)})
    player = GhostPlayer(host)
    player.control({"type": "ghost", "action": "play", "session_id": 1, "loop": True})
    await _until(lambda: len(host.poses_sent()) > 3)
    host.is_open = False
    await asyncio.wait_for(player.wait_closed(), 5)
    reply = player.control({"type": "ghost", "action": "pause"})
    assert reply is not None and reply["code"] == "ghost-closed"


# -- the data-channel hook -----------------------------------------------------------------


class _Channel:
    """The surface of RTCDataChannel that LandmarkChannel uses (no network)."""

    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def on(self, event: str, fn: Any) -> None:
        pass

    def send(self, data: Any) -> None:
        self.sent.append(data)


async def test_data_channel_hook_dispatches_and_survives_a_failing_handler() -> None:
    from climbd.broadcast import Broadcast
    from climbd.streaming.datachannel import LandmarkChannel
    from climbd.streaming.feed import LandmarkFeed
    from climbd.streaming.keyframes import KeyframeGovernor

    loop = asyncio.get_running_loop()
    feed = LandmarkFeed(Broadcast(loop), Broadcast(loop), KeyframeGovernor(lambda: None), loop)
    seen: list[dict[str, Any]] = []

    def echo(channel: LandmarkChannel, message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message)
        assert channel.feed is feed and channel.rtp_origin() == 1234 and channel.send("x")
        return {"type": "echo"}

    def broken(channel: LandmarkChannel, message: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    lc = LandmarkChannel(_Channel(), feed, lambda: 1234,  # type: ignore[arg-type]
                         handlers={"echo": echo, "broken": broken})
    try:
        assert lc.handle_client_message('{"type": "echo", "a": 1}') == {"type": "echo"}
        assert seen == [{"type": "echo", "a": 1}]
        reply = lc.handle_client_message('{"type": "broken"}')
        assert reply is not None and reply["code"] == "handler-failed"
        reply = lc.handle_client_message('{"type": "nobody"}')
        assert reply is not None and reply["code"] == "unknown-type"
    finally:
        lc.close()
        await feed.close()
