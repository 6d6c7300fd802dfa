"""A ghost armed at lift-off against a real ``climbd run`` with live BlazePose: the live source
is the steep-wall clip, looped, so the climber leaves the ground once a loop (see
../shared/media/ATTEMPTS.md); the ghost is the same clip, ingested. A Python viewer (aiortc,
ICE on 127.0.0.1 only) arms the ghost on the landmark data channel and checks that the
ghost attempt's lift-off is drawn on the live frame of the detector's lift-off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import STEEPWALL, http
from tests.replay_support import NAMES, Env, start_daemon
from tests.test_ghost_live import GhostViewer, viewer

__all__ = ["viewer"]  # the viewer fixture of the ghost-over-live tests, on this daemon

pytestmark = pytest.mark.media

CLIP_S = 377 / 25  # the steep-wall clip: 15.08 s, one attempt from its first frame to ~13.4 s


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not STEEPWALL.exists():
        pytest.skip("test media missing")
    e = start_daemon(tmp_path_factory.mktemp("ghost-liftoff"), source=STEEPWALL, pose=True)
    yield e
    e.daemon.stop()


def _race_states(v: GhostViewer) -> list[dict[str, Any]]:
    return [s for s in v.replies("ghost_state")
            if s.get("race") and s["race"]["liftoff_at"] is not None]


async def test_ghost_armed_at_liftoff_races_from_the_live_liftoff(
        env: Env, viewer: GhostViewer) -> None:
    sid = NAMES["steepwall"]
    status, stored = http("GET", f"{env.base}/api/sessions/{sid}/attempts")
    assert status == 200, stored
    start_s, end_s = stored["attempts"][0]["start_s"], stored["attempts"][0]["end_s"]
    assert end_s is not None and end_s - start_s > 10
    sent = time.monotonic()
    viewer.control(action="arm", session_id=sid, at="lift-off", repeat=True, seq=1)
    assert await viewer.wait_for(lambda: any(
        s["state"] == "armed" and s["arm_at"] == "lift-off" for s in viewer.replies(
            "ghost_state")), 20)
    # the next loop's lift-off, reported by the live detector about a second later
    assert await viewer.wait_for(lambda: bool(_race_states(viewer)), 2 * CLIP_S + 30), \
        (viewer.replies("ghost_state")[-1:], http("GET", env.base + "/api/attempts/live"))
    race = _race_states(viewer)[0]["race"]
    liftoff = race["liftoff_at"]
    assert liftoff >= sent and race["races"] == 1 and race["attempt"] == 0
    # it is the detector's lift-off (its capture time, the same monotonic clock)
    _, live = http("GET", env.base + "/api/attempts/live")
    assert liftoff in [(live.get(k) or {}).get("t") for k in ("current", "last")], live
    assert await viewer.wait_for(lambda: len(viewer.playing()) > 50, 10)
    rows = viewer.playing()
    hello = viewer.hello
    assert hello is not None
    # nothing played before the climber left the ground
    assert min(arrived for arrived, _ in rows) > liftoff
    # ghost time t is drawn on the live frame captured at liftoff + (t - start_s): the two
    # lift-offs coincide, for every ghost pose
    anchors = [hello["epoch"] + ((g.timestamp - hello["rtp_origin"]) % 2**32) / 90000
               - (g.t - start_s) for _, g in rows if g.rtp]
    assert len(anchors) > 40
    assert np.ptp(anchors) < 0.002 and np.mean(anchors) == pytest.approx(liftoff, abs=0.001)
    # the event came late, so the ghost starts where it is due then, not at its lift-off
    first_t = rows[0][1].t
    assert start_s < first_t < start_s + 3.0
    # repeat: after the ghost lands it waits again, and the next loop races again
    assert await viewer.wait_for(lambda: any(
        s["race"] and s["race"]["races"] == 2 for s in _race_states(viewer)), 2 * CLIP_S + 10)
    states = viewer.replies("ghost_state")
    assert any(s["state"] == "armed" and s["race"]["races"] == 1 for s in states)
    second = next(s for s in _race_states(viewer) if s["race"]["races"] == 2)["race"]
    assert second["liftoff_at"] - liftoff == pytest.approx(CLIP_S, abs=1.5)
