"""``/api/live``: the live page's WebSocket (recording status and commands, landmark fallback).

The tablet page keeps one WebSocket open next to its WebRTC session: it is reliable and
ordered, so it carries what must not be lost — recording state pushes and the original
design's ``start_recording``/``stop_recording`` commands — while poses ride the lossy data
channel. A client without WebRTC subscribes to the landmarks here instead (same binary
message as the data channel, :mod:`climbd.streaming.landmarks`, with ``pts`` in the timestamp
field since there is no RTP stream).

Client → server, JSON text (``id`` optional, echoed in the reply)::

    {"type": "subscribe", "landmarks": true}          binary pose messages on/off
    {"type": "start_recording", "name": "...", "climber": "...", "pre_roll_s": 3}
    {"type": "stop_recording"}
    {"type": "save_last", "seconds": 30, "name": "..."}
    {"type": "status"}                                recording status now
    {"type": "ping"}

Server → client: ``hello`` once, ``recording`` (the recorder's status) on every change and
every second while recording, ``ack`` with the session for a command, ``pong``, ``error``
``{"code", "error"}`` for a bad message (the socket stays open until
:data:`MAX_BAD_MESSAGES`, then closes with 1008 policy violation, RFC 6455 §7.4.1).

Also ``GET /api/live/stats``: viewer sessions, keyframe requests, landmark feed counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from climbd.api.keys import CONFIG, LIVE, RECORDER
from climbd.api.openapi import operation
from climbd.api.schemas import SaveLastRequest, StartRequest
from climbd.api.security import message_bucket, principal_of
from climbd.api.sessions import session_out
from climbd.api.whep import Problem, endpoint_of, problem
from climbd.errors import ClimbdError
from climbd.recording import Recorder
from climbd.security import jsonsafe
from climbd.security.ratelimit import TokenBucket
from climbd.streaming import WhepEndpoint
from climbd.streaming.landmarks import hello_message, pack_message

__all__ = ["add_routes"]

log = logging.getLogger(__name__)

#: Largest client message, bytes.
MAX_MESSAGE = 4096
#: Bad messages tolerated before the socket is closed.
MAX_BAD_MESSAGES = 50
#: Seconds between status checks, and between status pushes while recording.
STATUS_POLL_S = 0.25
STATUS_REFRESH_RECORDING_S = 1.0
STATUS_REFRESH_IDLE_S = 5.0
#: WebSocket ping interval, seconds (a vanished tablet is dropped after about twice this).
HEARTBEAT_S = 15.0

@dataclass
class _Sockets:
    """The open ``/api/live`` WebSockets of an application."""

    open: set[web.WebSocketResponse] = field(default_factory=set)


_SOCKETS: web.AppKey[_Sockets] = web.AppKey("climbd_live_sockets", _Sockets)


class _LiveClient:
    """One WebSocket client: reader loop plus status and landmark pushers."""

    def __init__(self, ws: web.WebSocketResponse, recorder: Recorder, endpoint: WhepEndpoint,
                 bucket: TokenBucket | None = None,
                 owner: tuple[int | None, int | None] = (None, None)):
        self.ws = ws
        self.owner = owner  # (device id, token id) recordings started here belong to
        self.bucket = bucket  # client messages per second (security.messages_per_s)
        self.recorder = recorder
        self.endpoint = endpoint
        self.bad = 0
        self._landmarks: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    async def send_json(self, data: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(data, separators=(",", ":")))

    async def run(self) -> None:
        feed = self.endpoint.feed
        info = feed.info if feed else None
        await self.ws.send_str(hello_message(
            rtp_origin=None, epoch=feed.epoch if feed else None,
            width=info.width if info else None, height=info.height if info else None,
            fps=info.fps if info else None))
        status_task = asyncio.create_task(self._push_status(), name="live-ws-status")
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error("bad-message", "binary messages are not accepted", None)
                elif msg.type == WSMsgType.ERROR:
                    break
                if self.bad >= MAX_BAD_MESSAGES:
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                        message=b"too many bad messages")
                    break
        finally:
            status_task.cancel()
            self._stop_landmarks()
            for t in (status_task, self._landmarks):
                if t is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    async def _error(self, code: str, text: str, msg_id: Any) -> None:
        self.bad += 1
        await self.send_json({"type": "error", "code": code, "error": text, "id": msg_id})

    async def _handle(self, text: str) -> None:
        if self.bucket is not None and not self.bucket.take(time.monotonic()):
            await self._error("rate-limited", "too many messages: slow down", None)
            return
        if len(text) > MAX_MESSAGE:
            await self._error("too-large", f"message longer than {MAX_MESSAGE} bytes", None)
            return
        try:
            data = jsonsafe.loads(text)  # nesting limit: no RecursionError
        except ValueError:
            await self._error("bad-json", "message is not JSON", None)
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            await self._error("bad-message", 'expected a JSON object with a string "type"', None)
            return
        kind = data.pop("type")
        msg_id = data.pop("id", None)
        if msg_id is not None and not isinstance(msg_id, (int, float, str)):
            await self._error("bad-message", '"id" must be a number or a string', None)
            return
        recorder = self.recorder
        try:
            if kind == "ping":
                await self.send_json({"type": "pong", "id": msg_id,
                                      "t": round(time.monotonic(), 6)})
            elif kind == "status":
                await self.send_json({"type": "recording", **recorder.status()})
            elif kind == "subscribe":
                want = data.get("landmarks")
                if not isinstance(want, bool):
                    await self._error("bad-message", '"landmarks" must be true or false', msg_id)
                    return
                self._start_landmarks() if want else self._stop_landmarks()
                await self.send_json({"type": "ack", "id": msg_id, "request": kind})
            elif kind == "start_recording":
                rec = await recorder.start(**StartRequest.model_validate(data).model_dump(),
                                           owner=self.owner)
                await self._ack(kind, msg_id, rec)
            elif kind == "stop_recording":
                if data:
                    await self._error("bad-message", "stop_recording takes no fields", msg_id)
                    return
                await self._ack(kind, msg_id, await recorder.stop())
            elif kind == "save_last":
                body = SaveLastRequest.model_validate(data)
                rec = await recorder.save_last(body.seconds, name=body.name,
                                               description=body.description,
                                               climber=body.climber, owner=self.owner)
                await self._ack(kind, msg_id, rec)
            else:
                await self._error("unknown-type", f"unknown message type {kind[:40]!r}", msg_id)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            await self._error("invalid-body", problems, msg_id)
        except ClimbdError as exc:  # AlreadyRecording, NotRecording, NoMediaYet, storage...
            await self.send_json({"type": "error", "code": type(exc).__name__,
                                  "error": str(exc), "id": msg_id})
        await self._push_status_now()

    async def _ack(self, request: str, msg_id: Any, rec: Any) -> None:
        await self.send_json({"type": "ack", "id": msg_id, "request": request,
                              "session": session_out(rec)})

    # -- pushes ----------------------------------------------------------------------------
    _last_key: tuple[Any, ...] | None = None
    _last_push = 0.0

    async def _push_status_now(self) -> None:
        status = self.recorder.status()
        self._last_key = _status_key(status)
        self._last_push = time.monotonic()
        await self.send_json({"type": "recording", **status})

    async def _push_status(self) -> None:
        await self._push_status_now()
        while not self.ws.closed:
            await asyncio.sleep(STATUS_POLL_S)
            status = self.recorder.status()
            refresh = (STATUS_REFRESH_RECORDING_S if status.get("state") == "recording"
                       else STATUS_REFRESH_IDLE_S)
            if (_status_key(status) != self._last_key
                    or time.monotonic() - self._last_push >= refresh):
                await self._push_status_now()

    def _start_landmarks(self) -> None:
        if self._landmarks is None or self._landmarks.done():
            self._landmarks = asyncio.create_task(self._push_landmarks(), name="live-ws-poses")

    def _stop_landmarks(self) -> None:
        if self._landmarks is not None:
            self._landmarks.cancel()

    async def _push_landmarks(self) -> None:
        feed = self.endpoint.feed
        if feed is None:
            return
        sub = feed.frames.subscribe(maxsize=2, policy="latest")
        try:
            async for frame in sub:
                if self.ws.closed:
                    break
                async with self._send_lock:
                    await self.ws.send_bytes(pack_message(frame, None))
        except (ConnectionError, RuntimeError):
            pass
        finally:
            sub.close()


def _status_key(status: dict[str, Any]) -> tuple[Any, ...]:
    return (status.get("state"), status.get("session_id"), status.get("name"),
            status.get("last_error"), status.get("last_session_id"))


@operation("Live WebSocket: recording status and commands, landmark fallback",
           tags=("live",),
           responses={101: ("Switching protocols (WebSocket)", None),
                      503: ("Too many live clients, or live view not running", Problem)},
           access="wall")
async def live_socket(request: web.Request) -> web.StreamResponse:
    """``GET /api/live`` (WebSocket upgrade)."""
    endpoint = endpoint_of(request)
    sockets = request.app[_SOCKETS].open
    limit = request.app[CONFIG].webrtc.max_websockets
    if len(sockets) >= limit:
        return problem(503, "websocket-limit",
                       f"the live view is full: {limit} WebSocket client(s) connected",
                       {"Retry-After": "5"})
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE)
    if not ws.can_prepare(request).ok:
        return problem(400, "websocket-required", "GET /api/live must be a WebSocket upgrade")
    sockets.add(ws)
    try:
        await ws.prepare(request)
        await _LiveClient(ws, request.app[RECORDER], endpoint, message_bucket(request.app),
                          owner=principal_of(request).owner).run()
    finally:
        sockets.discard(ws)
    return ws


@operation("Live view counters: viewers, keyframe requests, landmark feed, WebSockets",
           tags=("live",), responses={200: ("Counters", None)}, access="wall")
async def live_stats(request: web.Request) -> web.Response:
    """``GET /api/live/stats``."""
    endpoint = request.app.get(LIVE)
    stats: dict[str, Any] = endpoint.stats() if endpoint is not None else {"viewers": 0}
    stats["websockets"] = len(request.app[_SOCKETS].open)
    return web.json_response(stats)


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[_SOCKETS].open):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def add_routes(app: web.Application) -> None:
    """Register ``/api/live`` and ``/api/live/stats``; sockets are closed on shutdown."""
    app[_SOCKETS] = _Sockets()
    app.router.add_get("/api/live", live_socket, allow_head=False)
    app.router.add_get("/api/live/stats", live_stats, allow_head=False)
    app.on_shutdown.append(_close_sockets)
