"""A ghost armed at lift-off (``arm`` with ``"at": "lift-off"``): the player against a fake
host and a manual clock, and the lift-off log fed by the real attempt ``EventHub``.

The manual clock is the player's clock (due times, arm time, lift-off times); the player
still sleeps in real time between ticks, so the tests move the clock and then poll for what
the player sent. Every expected due time comes from the formula of the wire docstring,
``due = liftoff + (row.t - start_s) / speed``, not from the pacer.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest

from climbd.attempt_service import EventHub, LiveAttemptEvent
from climbd.errors import SessionNotFound
from climbd.ghost import GhostPlayer
from climbd.ghost.live import GhostService, LiftoffLog
from climbd.storage.posecodec import PoseSeries
from tests.test_ghost import FakeClock, FakeHost, _until, series

pytestmark = pytest.mark.unit


class LiftoffHost(FakeHost):
    """A fake viewer with stored attempts per session and a live lift-off log."""

    def __init__(self, sessions: dict[int, tuple[PoseSeries, float]],
                 attempts: dict[int, list[tuple[float, float | None]]]):
        super().__init__(sessions)
        self.stored_attempts = attempts
        self.liftoffs = LiftoffLog()
        self.unavailable = ""  # why no live lift-off can be seen ("" = the detector runs)

    async def attempts(self, session_id: int) -> list[tuple[float, float | None]]:
        if session_id not in self.sessions:
            raise SessionNotFound(session_id)
        return self.stored_attempts.get(session_id, [])

    def liftoff_after(self, clock_time: float) -> float | None:
        return self.liftoffs.after(clock_time)

    def liftoff_unavailable(self) -> str:
        return self.unavailable

    def lift_off(self, t: float) -> None:
        """The live detector reports a lift-off captured at clock time ``t``."""
        self.liftoffs.on_event(LiveAttemptEvent("start", t, t + 1.0, 1, None, 0.0))

    def rows(self) -> list[Any]:
        """Ghost poses sent to be matched to live frames (not stills)."""
        return [m for _, m in self.poses_sent() if not m.still]

    def states(self) -> list[dict[str, Any]]:
        return self.json_sent("ghost_state")


async def _settle(host: LiftoffHost) -> None:
    """Wait for the player's next periodic ``ghost_state`` (sent once a second of the manual
    clock, so call this after moving the clock by a second or more): by then it has looked
    at the clock and the lift-offs since."""
    n = len(host.states())
    await _until(lambda: len(host.states()) > n)


def _arm(player: GhostPlayer, **fields: Any) -> None:
    assert player.control({"type": "ghost", "action": "arm", "at": "lift-off", **fields}) is None


@pytest.mark.parametrize("speed", [1.0, 0.5])
async def test_armed_at_liftoff_the_ghost_attempt_starts_with_the_live_liftoff(
        speed: float) -> None:
    full = series(250)  # 10 s at 25 fps, jittered
    start_s, end_s = 2.0, 3.2
    host = LiftoffHost({5: (full, 10.0)}, {5: [(0.4, 1.0), (start_s, end_s)]})
    clock = FakeClock(1000.0)
    player = GhostPlayer(host, clock=clock)
    _arm(player, session_id=5, attempt=1, speed=speed, seq=1)
    await _until(lambda: any(s["state"] == "armed" for s in host.states()))
    host.lift_off(999.6)  # reported after the arm, but the climber left before it: ignored
    armed = host.states()[-1]
    assert armed["arm_at"] == "lift-off" and armed["t"] == pytest.approx(start_s)
    assert armed["race"] == {"attempt": 1, "start_s": start_s, "end_s": end_s,
                             "repeat": False, "liftoff_at": None, "races": 0}
    # waiting in the ghost attempt's lift-off pose: one still at start_s, nothing to play
    stills = [m for _, m in host.poses_sent() if m.still]
    assert stills and start_s - 0.25 <= stills[-1].t <= start_s
    clock.t = 1004.0
    await _settle(host)
    assert host.rows() == [] and host.states()[-1]["state"] == "armed"

    # the climber leaves the ground at 1005.0; the detector says so 1 s later
    liftoff = 1005.0
    clock.t = liftoff + 1.0
    host.lift_off(liftoff)
    await _until(lambda: bool(host.rows()))
    state = next(s for s in host.states() if s["state"] == "playing")
    assert state["arm_at"] == "lift-off" and state["race"]["liftoff_at"] == liftoff
    assert state["race"]["races"] == 1
    first = host.rows()[0]
    # the anchor lies 1 s in the past: the ghost shows where it is due now, not its start
    shown = start_s + 1.0 * speed
    assert shown - 0.06 < first.t <= shown

    # step the clock to each later row's due time by the formula: it goes out then
    times = full.times
    todo = [int(i) for i in np.flatnonzero((full.frames > first.frame) & (times < end_s))]
    for i in todo:
        clock.t = liftoff + (times[i] - start_s) / speed
        await _until(lambda i=i: host.rows()[-1].frame == int(full.frames[i]))
    played = {m.frame for m in host.rows()}
    timing = [x for x in player.timing if x[0] in played]  # not the still
    assert len(timing) == len(played) == len(todo) + 1
    for _frame, t, due, sent_at in timing:
        assert due == pytest.approx(liftoff + (t - start_s) / speed, abs=1e-9)
        assert sent_at >= due
    assert [m.frame for m in host.rows()] == [int(full.frames[i]) for i in
                                              [todo[0] - 1, *todo]]

    # at the ghost attempt's landing the race is over: ended there, nothing after end_s
    clock.t = liftoff + (end_s - start_s) / speed + 0.01
    await _until(lambda: host.states()[-1]["state"] == "ended")
    assert host.states()[-1]["t"] == pytest.approx(end_s)
    clock.t += 3.0
    host.lift_off(clock.t - 1.0)  # another attempt: no repeat, so no new race
    await _settle(host)
    assert max(m.t for m in host.rows()) < end_s
    assert host.states()[-1]["state"] == "ended"
    assert host.states()[-1]["race"]["races"] == 1
    player.close()
    await player.wait_closed()


async def test_repeat_rearms_after_each_race_and_a_new_liftoff_restarts_it() -> None:
    full = series(125)  # 5 s
    host = LiftoffHost({3: (full, 5.0)}, {3: [(1.0, 2.0)]})
    clock = FakeClock(50.0)
    player = GhostPlayer(host, clock=clock)
    _arm(player, session_id=3, repeat=True)  # attempt 0 by default
    await _until(lambda: any(s["state"] == "armed" for s in host.states()))
    # race 1: lift-off at 52.0, noticed at 52.8
    clock.t = 52.8
    host.lift_off(52.0)
    await _until(lambda: bool(host.rows()))
    assert 1.74 < host.rows()[-1].t <= 1.8
    # mid-race the climber comes off and leaves the ground again at 53.0 (noticed at 53.5):
    # the ghost starts over from its lift-off, anchored on the new one
    n = len(host.rows())
    clock.t = 53.5
    host.lift_off(53.0)
    await _until(lambda: len(host.rows()) > n and host.rows()[-1].t < 1.6)
    assert 1.44 < host.rows()[-1].t <= 1.5
    assert host.states()[-1]["race"]["races"] == 2
    # the ghost lands (2.0 s, i.e. clock 54.0): back to 1.0 s, armed for the next lift-off
    clock.t = 54.01
    await _until(lambda: host.states()[-1]["state"] == "armed")
    last = host.states()[-1]
    assert last["t"] == pytest.approx(1.0) and last["race"]["liftoff_at"] is None
    assert last["race"]["races"] == 2 and last["arm_at"] == "lift-off"
    n = len(host.rows())
    clock.t = 60.0
    await _settle(host)
    assert len(host.rows()) == n  # waiting: nothing plays
    clock.t = 60.5
    host.lift_off(60.2)  # race 3
    await _until(lambda: len(host.rows()) > n)
    assert 1.24 < host.rows()[-1].t <= 1.3
    assert host.states()[-1]["race"]["races"] == 3
    # any other control ends the lift-off arm: a pause holds the ghost where it is
    player.control({"type": "ghost", "action": "pause", "seq": 9})
    await _until(lambda: host.states()[-1]["seq"] == 9)
    assert host.states()[-1]["arm_at"] is None and host.states()[-1]["race"] is None
    assert host.states()[-1]["state"] == "paused"
    player.close()
    await player.wait_closed()


async def test_an_arm_without_the_attempt_or_live_pose_is_refused_and_nothing_changes() -> None:
    full = series(100)
    host = LiftoffHost({1: (full, 4.0), 2: (full, 4.0)}, {1: [(0.5, 3.0)], 2: []})
    clock = FakeClock()
    player = GhostPlayer(host, clock=clock)
    player.control({"type": "ghost", "action": "play", "session_id": 1, "t": 1.5, "seq": 1})
    player.control({"type": "ghost", "action": "pause", "seq": 2})
    await _until(lambda: host.states() and host.states()[-1]["seq"] == 2)
    before = host.states()[-1]
    _arm(player, session_id=2, seq=3)             # no attempt at all
    _arm(player, session_id=1, attempt=4, seq=4)  # it has one
    _arm(player, session_id=99, seq=5)            # no such session
    await _until(lambda: len(host.json_sent("error")) >= 3)
    host.unavailable = "live pose is off ([pose] enabled = false)"
    _arm(player, session_id=1, seq=6)             # nothing can see a lift-off
    await _until(lambda: len(host.json_sent("error")) >= 4)
    errors = {e["seq"]: e for e in host.json_sent("error")}
    assert errors[6]["code"] == "ghost-no-liftoff"
    assert errors[6]["error"] == ("the ghost cannot start at lift-off: live pose is off "
                                  "([pose] enabled = false)")
    assert errors[3]["code"] == "ghost-no-attempt"
    assert "session 2 has no attempt to race" in errors[3]["error"]
    assert errors[4]["code"] == "ghost-no-attempt"
    assert "session 1 has 1 attempt (0 to 0), not attempt 4" in errors[4]["error"]
    assert errors[5]["code"] == "ghost-not-found"
    await _until(lambda: host.states()[-1]["seq"] == 6)
    after = host.states()[-1]
    assert {**after, "seq": 2} == before  # still session 1, paused at 1.5 s, not armed
    assert player.race is None and not player.armed
    player.close()
    await player.wait_closed()


@pytest.mark.parametrize(("message", "needle"), [
    ({"action": "play", "session_id": 1, "at": "lift-off"}, '"at" goes with'),
    ({"action": "arm", "session_id": 1, "attempt": 0}, '"attempt" goes with'),
    ({"action": "arm", "session_id": 1, "at": "recording", "repeat": True},
     '"repeat" goes with'),
    ({"action": "arm", "session_id": 1, "at": "take-off"}, "at"),
    ({"action": "arm", "session_id": 1, "at": "lift-off", "attempt": -1}, "attempt"),
    ({"action": "arm", "session_id": 1, "at": "lift-off", "attempt": "2"}, "attempt"),
    ({"action": "arm", "session_id": 1, "at": "lift-off", "repeat": 1}, "repeat"),
    ({"action": "arm", "at": "lift-off"}, 'needs "session_id"'),
])
async def test_malformed_liftoff_arms_get_an_error_reply(message: dict[str, Any],
                                                        needle: str) -> None:
    player = GhostPlayer(LiftoffHost({}, {}))
    reply = player.control({"type": "ghost", **message, "seq": 7})
    assert reply is not None and reply["code"] == "ghost-invalid" and reply["seq"] == 7
    assert needle in reply["error"], reply
    assert player._task is None


async def test_arm_at_recording_is_the_default_and_waits_for_a_recording() -> None:
    full = series(100)
    host = LiftoffHost({1: (full, 4.0)}, {1: [(0.5, 3.0)]})
    clock = FakeClock()
    player = GhostPlayer(host, clock=clock)
    player.control({"type": "ghost", "action": "arm", "session_id": 1, "at": "recording"})
    await _until(lambda: any(s["state"] == "armed" for s in host.states()))
    assert host.states()[-1]["arm_at"] == "recording" and host.states()[-1]["race"] is None
    host.lift_off(clock.t + 0.5)  # a lift-off does not start a recording-armed ghost
    clock.t += 1.5
    await _settle(host)
    assert host.rows() == []
    host.recording = (8, clock.t - 0.5)
    await _until(lambda: bool(host.rows()))
    assert host.states()[-1]["aligned_to"] == 8 and 0.44 < host.rows()[0].t <= 0.5
    player.close()
    await player.wait_closed()


def test_the_liftoff_log_follows_the_attempt_event_hub() -> None:
    hub = EventHub()
    service = GhostService(cast(Any, None), cast(Any, None), hub)
    log = service.liftoffs
    assert log is not None
    for kind, t in (("start", 5.0), ("end", 9.0), ("start", 12.0)):
        hub.publish(LiveAttemptEvent(kind, t, t + 1.0, 1, None, 0.0))  # type: ignore[arg-type]
    assert log.after(0.0) == 5.0 and log.after(5.0) == 5.0
    assert log.after(5.001) == 12.0 and log.after(12.001) is None
    asyncio.run(service.close())  # unsubscribes
    hub.publish(LiveAttemptEvent("start", 20.0, 21.0, 2, None, 0.0))
    assert log.after(12.001) is None
    assert GhostService(cast(Any, None), cast(Any, None)).liftoffs is None
