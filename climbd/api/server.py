"""The listening sockets: the HTTP site (TLS, connection caps, request-head deadline, quiet
logging of malformed requests) and the local admin socket.

- **Slow clients**: aiohttp closes a connection whose complete request head has not arrived
  ``keepalive_timeout`` seconds after it opened (or after its previous response), so
  :func:`runner_options` sets it to ``security.header_timeout_s``; a client trickling a
  header byte by byte is dropped then, and — asyncio serving every connection on one
  loop — never delays the others while it lasts.
- **Connection caps**: :class:`GuardedSite` passes every connection through a
  :class:`climbd.security.transport.ConnectionGuard` (per client and global caps).
- **Malformed requests** are logged at most once per :data:`MALFORMED_LOG_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from climbd.config import Config
from climbd.security.transport import ConnectionGuard, connection_cap, server_ssl_context

__all__ = ["MALFORMED_LOG_EVERY_S", "GuardedSite", "make_site", "runner_options"]

log = logging.getLogger(__name__)


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


#: seconds open requests (live WebSockets, downloads) get to finish on SIGTERM
SHUTDOWN_TIMEOUT_S = 3.0


def runner_options(config: Config) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.web.AppRunner`: the request-head deadline, a
    server logger that does not let malformed requests flood the journal, and a short
    graceful-shutdown window (``SHUTDOWN_TIMEOUT_S``): aiohttp's default waits 60 s for open
    handlers, and a tablet's live WebSocket never finishes by itself, so SIGTERM would hang."""
    return {"keepalive_timeout": config.security.header_timeout_s, "logger": _server_log,
            "shutdown_timeout": SHUTDOWN_TIMEOUT_S}


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
    connections capped per client and in all (``security.max_connections``, below the fd
    limit).

    Raises:
        ConfigError: bad TLS settings.
    """
    ctx = server_ssl_context(config.server.tls_cert, config.server.tls_key)
    total = connection_cap(config.security.max_connections)
    guard = ConnectionGuard(config.security.max_connections_per_client, total)
    return GuardedSite(runner, config.server.host, config.server.port, guard=guard,
                       ssl_context=ctx)
