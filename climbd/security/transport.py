"""The listening socket: optional TLS, per-client connection cap, request-head deadline.

- **TLS** (``server.tls_cert`` / ``server.tls_key``): :func:`server_ssl_context` builds a
  server :class:`ssl.SSLContext` from :func:`ssl.create_default_context` (Python's secure
  defaults) with TLS 1.2 as the floor (RFC 9325 §3.1.1: TLS 1.2 or later only). Without
  both files the appliance speaks plain HTTP, which the LAN setup allows (THREAT_MODEL.md).
- **Slow clients**: aiohttp closes a connection whose complete request head has not arrived
  ``keepalive_timeout`` seconds after it opened (or after its previous response), so
  :func:`runner_options` sets it to ``security.header_timeout_s``; a client trickling a
  header byte by byte is dropped then, and — asyncio serving every connection on one
  loop — never delays the others while it lasts.
- **Connection floods**: :class:`ConnectionGuard` closes a new connection at once when its
  client address (IPv4, or IPv6 /64) already holds ``security.max_connections_per_client``
  connections, so one client cannot use up the process's file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from climbd.config import Config
from climbd.errors import ConfigError
from climbd.security.ratelimit import client_key

__all__ = ["ConnectionGuard", "GuardedSite", "make_site", "runner_options",
           "server_ssl_context"]

log = logging.getLogger(__name__)


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The server TLS context for a PEM certificate and key, or None when both are ''.

    Raises:
        ConfigError: only one of the two is set, or the files cannot be loaded.
    """
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("server.tls_cert and server.tls_key must be set together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load server.tls_cert {cert!r} / server.tls_key {key!r}: "
                          f"{exc}") from None
    return ctx


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs every malformed request (bad header, line too long) at ERROR with a
    traceback: a hostile client could fill the journal. Such records become one WARNING line
    without traceback, at most one per :data:`MALFORMED_LOG_EVERY_S`; other records pass."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or record.levelno > logging.ERROR:
            return True
        now = time.monotonic()
        if now - self._last < MALFORMED_LOG_EVERY_S:
            self.suppressed += 1
            return False
        self._last = now
        record.msg = f"{record.getMessage()}: {exc.__class__.__name__} (status {exc.code})" + (
            f"; {self.suppressed} more malformed requests not logged" if self.suppressed
            else "")
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.suppressed = 0
        return True


#: Seconds between two log lines about malformed requests.
MALFORMED_LOG_EVERY_S = 10.0
_server_log = logging.getLogger("climbd.http")
_server_log.addFilter(_MalformedRequestFilter())


def runner_options(config: Config) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.web.AppRunner`: the request-head deadline and a
    server logger that does not let malformed requests flood the journal."""
    return {"keepalive_timeout": config.security.header_timeout_s, "logger": _server_log}


class ConnectionGuard:
    """Counts open connections per client and refuses those over the limit.

    Args:
        limit: connections one client address may hold open.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.open: Counter[str] = Counter()
        #: connections closed at once because their client was over the limit
        self.refused = 0

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory that guards the connections ``factory``'s protocols serve."""
        return lambda: _GuardedProtocol(factory, self)


class _GuardedProtocol(asyncio.Protocol):
    """Admits a connection (then hands every event to the real protocol) or closes it."""

    __slots__ = ("_factory", "_guard", "_inner", "_key")

    def __init__(self, factory: Callable[[], asyncio.Protocol], guard: ConnectionGuard):
        self._factory = factory
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        key = client_key(peer[0] if isinstance(peer, tuple) and peer else None)
        guard = self._guard
        if guard.open[key] >= guard.limit:
            guard.refused += 1
            if guard.refused <= 3 or guard.refused % 100 == 0:
                log.warning("closing a connection from %s: %d already open "
                            "(security.max_connections_per_client)", key, guard.open[key])
            transport.abort()  # type: ignore[attr-defined]
            return
        guard.open[key] += 1
        self._key = key
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._key is not None:
            self._guard.open[self._key] -= 1
            if self._guard.open[self._key] <= 0:
                del self._guard.open[self._key]
            self._key = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A :class:`aiohttp.web.TCPSite` whose connections pass a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int | None, *,
                 guard: ConnectionGuard, ssl_context: ssl.SSLContext | None = None):
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        bound: int | None = getattr(self, "_bound_port", None)
        return bound if bound is not None else int(self._port)

    @property
    def tls(self) -> bool:
        """True if the site serves HTTPS."""
        return self._ssl_context is not None

    async def start(self) -> None:
        """Listen (same as TCPSite.start, with the guarded protocol factory)."""
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.guard.wrap(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def make_site(runner: web.BaseRunner, config: Config) -> GuardedSite:
    """The daemon's listening site: ``server.host``/``server.port``, TLS if configured,
    connections capped per client.

    Raises:
        ConfigError: bad TLS settings.
    """
    ctx = server_ssl_context(config.server.tls_cert, config.server.tls_key)
    return GuardedSite(runner, config.server.host, config.server.port,
                       guard=ConnectionGuard(config.security.max_connections_per_client),
                       ssl_context=ctx)
