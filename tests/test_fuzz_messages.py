"""Property-based fuzzing of the message parsers a hostile client reaches:

- ``/api/live`` WebSocket commands (:class:`climbd.api.live._LiveClient` ``_handle``),
- the ``landmarks`` data channel (:meth:`LandmarkChannel.handle_client_message`, including
  its extension hook) and the ghost controls it forwards (:meth:`GhostPlayer.control`),
- WHEP offers (:func:`climbd.streaming.offer.parse_offer`), landmark wire messages
  (:func:`climbd.streaming.landmarks.decode_message`),
- the security layer's own parsers (Host, Origin, pairing codes, client keys, CSRF).

Property: nothing raises but the documented error type, every reply is JSON-serialisable,
and the daemon-side objects stay usable. About 5,300 cases (under a minute on an idle
2-core machine).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climbd.errors import AlreadyRecording, ClimbdError, NoMediaYet, NotRecording
from climbd.security import crypto
from climbd.security.hosts import origin_of, split_host
from climbd.security.ratelimit import client_key
from climbd.storage.database import SessionRecord
from climbd.streaming.errors import OfferError
from tests.conftest import TimeBudget

pytestmark = pytest.mark.unit

#: Cases per property; they run in growing chunks within a shared time budget
#: (CLIMBD_FUZZ_BUDGET_S / 5: 30 s for all six on a loaded machine, ~10 s quiet).
CASES = {"ws": 600, "dc": 600, "ghost": 600, "sdp": 1000, "landmarks": 1000, "security": 1500}
BUDGET = TimeBudget(float(os.environ.get("CLIMBD_FUZZ_BUDGET_S", "150")) / 5, len(CASES))
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=4)
TYPES = ["ping", "hello", "status", "subscribe", "start_recording", "stop_recording",
         "save_last", "ghost", "", "PING", "__proto__", "x" * 100]
FIELDS = ["id", "seq", "landmarks", "name", "climber", "description", "pre_roll_s", "seconds",
          "action", "session_id", "t", "speed", "loop", "type", "at", "attempt", "repeat"]


@st.composite
def messages(draw: st.DrawFn) -> str | bytes:
    """Client messages: mostly near-valid JSON commands, some garbage."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return draw(st.text(max_size=300))
    if kind == 2:
        return json.dumps(draw(json_values))
    msg: dict[str, Any] = {"type": draw(st.sampled_from(TYPES) | st.text(max_size=20))}
    if msg["type"] == "ghost" or draw(st.booleans()):
        msg["action"] = draw(st.sampled_from(["play", "pause", "seek", "speed", "loop", "stop",
                                              "arm", "state", "explode"]))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        msg[name] = draw(scalars | st.integers(-5, 2**60) | st.lists(scalars, max_size=2)
                         | st.floats(-1e6, 1e6)
                         | st.sampled_from([0.05, 0.5, 2.5, 1e308, "lift-off", "recording"]))
    text = json.dumps(msg)
    if kind == 9:
        text = text + draw(st.text(max_size=5000))  # oversized or trailing garbage
    return text


def _jsonable(reply: Any) -> None:
    if reply is not None:
        json.dumps(reply, allow_nan=False)


# -- fakes at the transport seam -----------------------------------------------------------
class _Sub:
    def close(self) -> None:
        pass

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    async def get(self) -> Any:
        raise EOFError


class _Frames:
    def subscribe(self, maxsize: int = 2, policy: str = "latest") -> _Sub:
        return _Sub()


class _Feed:
    frames = _Frames()
    info = None
    epoch = None
    delay_s = 0.0  # a live (not delayed) feed


class _Channel:
    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def on(self, event: str, fn: Any) -> None:
        pass

    def send(self, data: Any) -> None:
        self.sent.append(data)


def _record(i: int = 1) -> SessionRecord:
    return SessionRecord(id=i, name="s", description="", climber="", created_at=0.0,
                         updated_at=0.0, duration_s=1.0, frame_count=30, frames_with_pose=30,
                         video_path="", status="completed", error=None, width=640, height=480,
                         fps=30.0, source="", pre_roll_s=0.0)


class _Recorder:
    def __init__(self) -> None:
        self.calls = 0

    def status(self) -> dict[str, Any]:
        return {"state": "idle", "session_id": None}

    async def _maybe_fail(self) -> SessionRecord:
        self.calls += 1
        err = (None, AlreadyRecording("busy"), NotRecording("idle"), NoMediaYet("no"))[
            self.calls % 4]
        if err is not None:
            raise err
        return _record(self.calls)

    async def start(self, **kw: Any) -> SessionRecord:
        return await self._maybe_fail()

    async def stop(self) -> SessionRecord:
        return await self._maybe_fail()

    async def save_last(self, seconds: Any, **kw: Any) -> SessionRecord:
        return await self._maybe_fail()


class _Daemon:
    recorder = _Recorder()


class _Endpoint:
    feed = None


class _WS:
    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        json.loads(data)
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        pass


class _GhostHost:
    is_open = True

    async def session(self, session_id: int) -> Any:
        from climbd.errors import SessionNotFound
        from climbd.ghost import GhostSession

        if session_id % 2:
            raise SessionNotFound(session_id)
        return GhostSession(session_id, 2.0, 30.0, "s", 0)

    async def poses(self, session_id: int, start: float, end: float | None) -> Any:
        raise ClimbdError("no poses")

    def send(self, data: Any) -> bool:
        return True

    def backlog(self) -> int:
        return 0

    def stamp(self, clock_time: float) -> tuple[int, bool]:
        return 0, False

    def recording_start(self) -> None:
        return None

    async def attempts(self, session_id: int) -> list[tuple[float, float | None]]:
        return [(0.5, 1.5)] if session_id % 4 == 0 else []

    def liftoff_after(self, clock_time: float) -> float | None:
        return clock_time

    def liftoff_unavailable(self) -> str:
        return ""


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


# -- the properties ------------------------------------------------------------------------
@FUZZ
@given(msgs=st.lists(messages(), min_size=1, max_size=3))
def _live_websocket_commands_never_crash(loop: asyncio.AbstractEventLoop,
                                             msgs: list[str | bytes]) -> None:
    from climbd.api.live import _LiveClient

    async def run() -> None:
        ws = _WS()
        client = _LiveClient(ws, _Daemon().recorder, _Endpoint())  # type: ignore[arg-type]
        for m in msgs:
            await client._handle(m if isinstance(m, str) else m.decode("latin-1"))
        client._stop_landmarks()
        if client._landmarks is not None:
            await asyncio.gather(client._landmarks, return_exceptions=True)
        assert ws.sent  # every message gets an answer (reply or status push)

    loop.run_until_complete(run())


@FUZZ
@given(msgs=st.lists(messages(), min_size=1, max_size=3))
def _data_channel_messages_never_crash(loop: asyncio.AbstractEventLoop,
                                           msgs: list[str | bytes]) -> None:
    from climbd.streaming.datachannel import LandmarkChannel

    async def run() -> None:
        ch = LandmarkChannel(_Channel(), _Feed(), lambda: None)  # type: ignore[arg-type,unused-ignore]
        for m in msgs:
            _jsonable(ch.handle_client_message(m))
        ch.close()

    loop.run_until_complete(run())


@FUZZ
@given(msgs=st.lists(messages(), min_size=1, max_size=3))
def _ghost_controls_never_crash(loop: asyncio.AbstractEventLoop,
                                    msgs: list[str | bytes]) -> None:
    from climbd.ghost import GhostPlayer

    async def run() -> None:
        player = GhostPlayer(_GhostHost())
        for m in msgs:
            try:
                data = json.loads(m)
            except ValueError:
                continue
            if isinstance(data, dict):
                _jsonable(player.control(data))
        await asyncio.sleep(0)
        player.close()
        await player.wait_closed()

    loop.run_until_complete(run())


SDP_LINES = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
             "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
             "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly", "a=sendrecv", "a=rtcp-mux",
             "a=rtpmap:96 H264/90000", "a=fmtp:96 packetization-mode=1",
             "a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=setup:actpass",
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
             "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
             "a=sctp-port:5000", "m=audio 9 UDP/TLS/RTP/SAVPF 0"]


@settings(FUZZ, max_examples=250)
@given(lines=st.lists(st.sampled_from(SDP_LINES) | st.text(max_size=80), max_size=30),
       sep=st.sampled_from(["\r\n", "\n", "\r", ""]))
def _whep_offer_parser_only_raises_offer_errors(lines: list[str], sep: str) -> None:
    from climbd.streaming.offer import parse_offer

    try:
        summary = parse_offer(sep.join(lines))
    except OfferError as exc:
        assert exc.code and str(exc)
    else:
        assert summary.sdp.startswith("v=0")


@settings(FUZZ, max_examples=250)
@given(data=st.binary(max_size=600))
def _landmark_decoder_only_raises_value_error(data: bytes) -> None:
    from climbd.streaming.landmarks import decode_message

    try:
        msg = decode_message(data)
    except ValueError:
        return
    assert msg is not None


@settings(max_examples=375, deadline=None, database=None)
@given(host=st.text(max_size=80) | st.from_regex(r"\[?[0-9a-fA-F:.]{1,40}\]?(:[0-9]{0,6})?"),
       origin=st.text(max_size=80) | st.from_regex(r"https?://[^/]{0,40}(/.*)?"),
       code=st.text(max_size=40), header=st.text(max_size=60) | st.none())
def _security_parsers_never_crash(host: str, origin: str, code: str,
                                      header: str | None) -> None:
    parsed = split_host(host)
    if parsed is not None:
        name, port = parsed
        assert name and name == name.lower() and (port is None or 0 < port <= 65535)
        assert not any(c in name for c in " ;,/\\@")
    o = origin_of(origin)
    assert o is None or o[0] in ("http", "https")
    digits = crypto.normalize_code(code)
    assert digits is None or (len(digits) == 8 and digits.isdigit())
    assert client_key(host)
    assert not crypto.csrf_matches(header, ["cookie"]) or header == crypto.csrf_token("cookie")
    assert not math.isnan(len(host))


def test_live_websocket_commands_never_crash(loop: asyncio.AbstractEventLoop) -> None:
    BUDGET.run(lambda _n: (_live_websocket_commands_never_crash(loop), 150)[1], CASES["ws"])


def test_data_channel_messages_never_crash(loop: asyncio.AbstractEventLoop) -> None:
    BUDGET.run(lambda _n: (_data_channel_messages_never_crash(loop), 150)[1], CASES["dc"])


def test_ghost_controls_never_crash(loop: asyncio.AbstractEventLoop) -> None:
    BUDGET.run(lambda _n: (_ghost_controls_never_crash(loop), 150)[1], CASES["ghost"])


def test_whep_offer_parser_only_raises_offer_errors() -> None:
    BUDGET.run(lambda _n: (_whep_offer_parser_only_raises_offer_errors(), 250)[1], CASES["sdp"])


def test_landmark_decoder_only_raises_value_error() -> None:
    BUDGET.run(lambda _n: (_landmark_decoder_only_raises_value_error(), 250)[1], CASES["landmarks"])


def test_security_parsers_never_crash() -> None:
    BUDGET.run(lambda _n: (_security_parsers_never_crash(), 375)[1], CASES["security"])
