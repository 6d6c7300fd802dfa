"""Honest recording controls: health says what is buffered and what Start includes; Start's
pre-roll is chosen, clamped and reported; the timer is the real duration; save-last refuses
more than the buffer can hold. An in-process daemon on a fake camera playing a real clip,
a paired wall tablet as the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from climbd.daemon import Daemon
from tests.securitykit import Agent, new_code, secure_daemon

pytestmark = pytest.mark.integration

BUFFER_S = 4.0
GOP_S = 1.0  # video.keyframe_interval_s default


@pytest.fixture
async def tablet(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Agent]]:
    sections = {"recording": {"pre_roll_s": 2.0, "buffer_s": BUFFER_S}}
    async with secure_daemon(tmp_path, sections=sections) as (daemon, base), Agent(base) as agent:
        await agent.pair(await new_code(daemon))
        yield daemon, agent


async def _recording(agent: Agent) -> dict[str, Any]:
    status, health = await agent.req("GET", "/api/health")
    assert status == 200
    return dict(health["recording"])


async def _until_buffered(agent: Agent, seconds: float, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rec = await _recording(agent)
        if rec["pre_roll_available_s"] >= seconds:
            return rec
        assert time.monotonic() < deadline, rec
        await asyncio.sleep(0.1)


async def test_health_tells_what_start_can_include(tablet: tuple[Daemon, Agent]) -> None:
    _, agent = tablet
    rec = await _until_buffered(agent, BUFFER_S)
    assert rec["buffer_max_s"] == BUFFER_S and rec["pre_roll_default_s"] == 2.0
    assert rec["state"] == "idle" and rec["pre_roll_s"] is None and rec["elapsed_s"] == 0
    # the buffer keeps whole GOPs: at least buffer_s, at most one GOP more
    assert BUFFER_S <= rec["pre_roll_available_s"] <= BUFFER_S + GOP_S + 0.1


@pytest.mark.parametrize(("asked", "low", "high"), [
    (0.0, 0.0, GOP_S + 0.1),            # from the newest keyframe: at most one GOP back
    (2.0, 2.0, 2.0 + GOP_S + 0.1),      # the keyframe at or before now - 2 s
    (1000.0, BUFFER_S, BUFFER_S + GOP_S + 0.1),  # clamped to what is buffered
])
async def test_start_includes_the_chosen_pre_roll_and_says_so(
        tablet: tuple[Daemon, Agent], asked: float, low: float, high: float) -> None:
    _, agent = tablet
    await _until_buffered(agent, BUFFER_S)
    t0 = time.monotonic()
    status, session = await agent.req("POST", "/api/recordings/start",
                                      json={"pre_roll_s": asked})
    assert status == 201, session
    assert low <= session["pre_roll_s"] <= high, session
    # while it records, health names the same pre-roll, and the timer counts it
    deadline = time.monotonic() + 10
    while True:
        rec = await _recording(agent)
        if rec["elapsed_s"] >= session["pre_roll_s"] + 1.0:
            break
        assert time.monotonic() < deadline, rec
        await asyncio.sleep(0.1)
    since_start = time.monotonic() - t0
    assert rec["state"] == "recording" and rec["pre_roll_s"] == session["pre_roll_s"]
    # elapsed = pre-roll + time since Start (to a frame and a poll interval)
    assert rec["elapsed_s"] == pytest.approx(session["pre_roll_s"] + since_start, abs=0.5)
    status, done = await agent.req("POST", "/api/recordings/stop")
    assert status == 200 and done["pre_roll_s"] == session["pre_roll_s"]
    assert done["duration_s"] >= rec["elapsed_s"] - 0.1


async def test_start_rejects_negative_pre_roll(tablet: tuple[Daemon, Agent]) -> None:
    _, agent = tablet
    for bad in (-1, "ten", float("inf")):
        status, body = await agent.req("POST", "/api/recordings/start", json={"pre_roll_s": bad})
        assert status == 422 and body["error"] == "invalid_body", body
    assert (await _recording(agent))["state"] == "idle"


async def test_save_last_beyond_the_buffer_is_a_clear_422(tablet: tuple[Daemon, Agent]) -> None:
    _, agent = tablet
    await _until_buffered(agent, BUFFER_S)
    status, body = await agent.req("POST", "/api/recordings/save-last", json={"seconds": 120})
    assert status == 422, body
    assert body["error"] == "BeyondBuffer"
    assert "120" in body["message"] and f"{BUFFER_S:g} s" in body["message"]
    assert "recording.buffer_s" in body["message"]
    status, sessions = await agent.req("GET", "/api/sessions")
    assert status == 200 and sessions["total"] == 0, "nothing was saved"
    # what the buffer holds is saved, and the session says how long it is
    status, saved = await agent.req("POST", "/api/recordings/save-last",
                                    json={"seconds": BUFFER_S})
    assert status == 201, saved
    assert saved["status"] == "completed"
    assert BUFFER_S - 0.1 <= saved["duration_s"] <= BUFFER_S + GOP_S + 0.2, saved
    assert BUFFER_S <= saved["pre_roll_s"] <= saved["duration_s"]
