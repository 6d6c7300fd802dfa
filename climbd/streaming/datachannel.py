"""The ``landmarks`` data channel of one viewer.

The viewer creates it in its offer (``pc.createDataChannel("landmarks", {ordered: false,
maxRetransmits: 0})``: partially reliable SCTP, RFC 8831 §6.1 / RFC 3758, so a late pose is
dropped, never retransmitted behind newer ones). The server sends:

- a JSON ``hello`` (see :func:`~climbd.streaming.landmarks.hello_message`) when the channel
  opens, as soon as the video's RTP timestamp origin is known, and every
  :data:`HELLO_INTERVAL_S` seconds (the channel is lossy);
- one binary pose message per pose result, its timestamp already on this viewer's RTP clock;
- a JSON reply to each client message: ``{"type": "ping", "id": ...}`` gets ``pong``
  (with the server's monotonic time ``t``), ``{"type": "hello"}`` a fresh hello, anything else
  an ``error`` (rate limited) — the channel stays open and other viewers are unaffected.

If the channel's send buffer backs up (a slow or stalled link), poses are skipped instead of
queued: the newest pose is the only one worth sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import RTCDataChannel

from climbd.security import jsonsafe
from climbd.security.ratelimit import TokenBucket
from climbd.streaming.feed import LandmarkSource
from climbd.streaming.landmarks import hello_message, pack_message

__all__ = ["LABEL", "LandmarkChannel"]

log = logging.getLogger(__name__)

#: The label a viewer gives the data channel it wants landmarks on.
LABEL = "landmarks"
#: Seconds between repeated hello messages.
HELLO_INTERVAL_S = 2.0
#: Largest client message handled, bytes (anything larger gets an error).
MAX_CLIENT_MESSAGE = 1024
#: Poses are skipped while more than this many bytes wait in the channel's send buffer
#: (≈ 50 poses of 280 bytes).
MAX_BUFFERED = 16 * 1024
#: Error replies per second at most (malformed input must not cost more than it sends).
ERROR_REPLIES_PER_S = 5.0

#: A handler of one client message ``type``: ``handler(channel, message)`` returns the reply
#: to send as JSON (or None) and must not raise (an exception becomes a "handler-failed"
#: error reply).
MessageHandler = Callable[["LandmarkChannel", dict[str, Any]], dict[str, Any] | None]


class LandmarkChannel:
    """Feeds one viewer's ``landmarks`` data channel.

    Args:
        channel: the open channel the viewer created.
        feed: the shared landmark feed (or a delay line: the delayed view).
        rtp_origin: returns the viewer's RTP timestamp origin, or None while unknown.
        message_limit: client messages per second and burst (None = unlimited).
        handlers: client message ``type`` -> :data:`MessageHandler`, for the types this
            class does not handle itself (``ping``, ``hello``).

    Attributes:
        sent, skipped: pose messages sent / skipped (buffer full).
        bytes_sent: bytes of pose messages sent.
        malformed: client messages that were not understood.
    """

    def __init__(self, channel: RTCDataChannel, feed: LandmarkSource,
                 rtp_origin: Callable[[], int | None],
                 message_limit: tuple[float, float] | None = None,
                 handlers: Mapping[str, MessageHandler] | None = None):
        self.channel = channel
        #: handlers of client message types this class does not know itself (see
        #: :data:`MessageHandler`); the ghost player registers "ghost"
        self.handlers: Mapping[str, MessageHandler] = dict(handlers or {})
        #: client messages per second and burst (token bucket); None = unlimited
        self._bucket = (TokenBucket(message_limit[0], message_limit[1], time.monotonic())
                        if message_limit else None)
        self.rate_limited = 0
        self._feed = feed
        self._rtp_origin = rtp_origin
        self._sub = feed.frames.subscribe(maxsize=2, policy="latest")
        self._task: asyncio.Task[None] | None = None
        self._hello_origin: int | None = None
        self._last_hello = 0.0
        self._error_bucket = TokenBucket(ERROR_REPLIES_PER_S, ERROR_REPLIES_PER_S,
                                         time.monotonic())
        self.sent = 0
        self.skipped = 0
        self.bytes_sent = 0
        self.malformed = 0
        channel.on("message", self._on_message)
        channel.on("close", self.close)

    @property
    def is_open(self) -> bool:
        """True while the channel can carry messages."""
        return self.channel.readyState == "open"

    def start(self) -> None:
        """Start sending (hello first)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-landmarks")

    def close(self) -> None:
        """Stop sending and release the feed subscription (idempotent; the peer closes the
        channel itself)."""
        self._sub.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the sending task has ended."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _send(self, data: str | bytes) -> bool:
        if not self.is_open:
            return False
        try:
            self.channel.send(data)
        except Exception:  # InvalidStateError when closing, ConnectionError on a dead link
            return False
        return True

    def send_hello(self) -> None:
        """Send the hello message now."""
        origin = self._rtp_origin()
        info = self._feed.info
        self._hello_origin = origin
        self._last_hello = time.monotonic()
        self._send(hello_message(
            rtp_origin=origin, epoch=self._feed.epoch,
            width=info.width if info else None, height=info.height if info else None,
            fps=info.fps if info else None, delay_s=self._feed.delay_s))

    async def _run(self) -> None:
        self.send_hello()
        try:
            while self.is_open:
                try:
                    frame = await asyncio.wait_for(self._sub.get(), HELLO_INTERVAL_S)
                except asyncio.TimeoutError:
                    frame = None
                except EOFError:
                    break
                origin = self._rtp_origin()
                if (origin != self._hello_origin
                        or time.monotonic() - self._last_hello >= HELLO_INTERVAL_S):
                    self.send_hello()
                if frame is None:
                    continue
                if self.channel.bufferedAmount > MAX_BUFFERED:
                    self.skipped += 1
                    continue
                data = pack_message(frame, origin)
                if self._send(data):
                    self.sent += 1
                    self.bytes_sent += len(data)
        finally:
            self._sub.close()

    # -- what message handlers may use ----------------------------------------------------
    @property
    def feed(self) -> LandmarkSource:
        """The shared landmark feed this channel is fed from."""
        return self._feed

    def rtp_origin(self) -> int | None:
        """This viewer's RTP timestamp origin, or None while unknown."""
        return self._rtp_origin()

    def send(self, data: str | bytes) -> bool:
        """Send one message now; False if the channel is closed or the send failed."""
        return self._send(data)

    # -- client messages -------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        reply = self.handle_client_message(message)
        if reply is not None:
            self._send(json.dumps(reply, separators=(",", ":")))

    def handle_client_message(self, message: str | bytes) -> dict[str, Any] | None:
        """The reply to one client message, or None (also None for rate-limited errors)."""
        if self._bucket is not None and not self._bucket.take(time.monotonic()):
            self.rate_limited += 1
            return self._error("too many messages: slow down", "rate-limited")
        if isinstance(message, bytes):
            return self._error("binary messages are not accepted from clients", "bad-message")
        if len(message) > MAX_CLIENT_MESSAGE:
            return self._error(f"message longer than {MAX_CLIENT_MESSAGE} characters",
                               "too-large")
        try:
            data = jsonsafe.loads(message)  # nesting limit: no RecursionError
        except ValueError:
            return self._error("message is not JSON", "bad-json")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return self._error('message must be a JSON object with a string "type"',
                               "bad-message")
        kind = data["type"]
        if kind == "ping":
            msg_id = data.get("id")
            if msg_id is not None and not isinstance(msg_id, (int, float, str)):
                return self._error('"id" must be a number or a string', "bad-message")
            return {"type": "pong", "id": msg_id, "t": round(time.monotonic(), 6)}
        if kind == "hello":
            self.send_hello()
            return None
        handler = self.handlers.get(kind)
        if handler is not None:
            try:
                return handler(self, data)
            except Exception:
                log.exception("data-channel handler for %r failed", kind)
                return self._error(f"could not handle a {kind!r} message", "handler-failed")
        return self._error(f"unknown message type {kind[:40]!r}", "unknown-type")

    def _error(self, text: str, code: str) -> dict[str, Any] | None:
        self.malformed += 1
        if not self._error_bucket.take(time.monotonic()):
            return None
        if self.malformed <= 3 or self.malformed % 100 == 0:
            log.info("live viewer sent a bad data-channel message (%s): %s", code, text)
        return {"type": "error", "code": code, "error": text}

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict."""
        return {"sent": self.sent, "skipped": self.skipped, "bytes": self.bytes_sent,
                "malformed": self.malformed, "state": self.channel.readyState}
