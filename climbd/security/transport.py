"""The listening socket's policy: optional TLS, global and per-client connection caps.

- **TLS** (``server.tls_cert`` / ``server.tls_key``): :func:`server_ssl_context` builds a
  server :class:`ssl.SSLContext` from :func:`ssl.create_default_context` (Python's secure
  defaults) with TLS 1.2 as the floor (RFC 9325 §3.1.1: TLS 1.2 or later only). Without
  both files the appliance speaks plain HTTP, which the LAN setup allows (THREAT_MODEL.md).
- **Connection floods**: :class:`ConnectionGuard` closes a new connection at once when its
  client address (IPv4, or IPv6 /64) already holds ``security.max_connections_per_client``
  connections, or when the process already holds :func:`connection_cap` connections in all:
  many addresses together cannot use up the file descriptors the recorder, SQLite and the
  live view need (``LimitNOFILE`` in ``systemd/climbd.service``; the cap stays below it).

The aiohttp side (the site that applies the guard, the request-head deadline, the log filter
for malformed requests) is :mod:`climbd.api.server`. Pure standard library here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
from collections import Counter
from collections.abc import Callable

from climbd.errors import ConfigError
from climbd.security.ratelimit import client_key

__all__ = ["FD_HEADROOM", "ConnectionGuard", "connection_cap", "server_ssl_context"]

#: File descriptors kept out of reach of client connections: the recorder's files, SQLite
#: (database, WAL, shared memory), the camera, ffmpeg/export pipes, aiortc's UDP sockets of
#: live viewers, the admin socket and log files. Each WHEP viewer holds a handful of UDP
#: sockets (one per ICE candidate), so this leaves room for tens of viewers.
FD_HEADROOM = 256

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


def open_fds() -> int:
    """File descriptors this process holds now (0 if ``/proc/self/fd`` cannot be read)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_cap(configured: int, soft_limit: int | None = None,
                   in_use: int | None = None) -> int:
    """The most client connections the process may hold: ``configured``
    (``security.max_connections``, 0 = automatic), never more than the process's soft
    ``RLIMIT_NOFILE`` minus the descriptors already in use and :data:`FD_HEADROOM` (and at
    least 16).

    Args:
        configured: the configured cap, or 0 for "as many as the fd limit allows".
        soft_limit: the fd limit to use (default: ``getrlimit(RLIMIT_NOFILE)``).
        in_use: descriptors open now (default: :func:`open_fds`).
    """
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        soft_limit = 1 << 20
    used = open_fds() if in_use is None else in_use
    ceiling = max(16, soft_limit - used - FD_HEADROOM)
    return ceiling if configured <= 0 else min(configured, ceiling)


class ConnectionGuard:
    """Counts open connections per client and in all, and refuses those over a limit.

    Args:
        limit: connections one client address may hold open.
        total: connections all clients together may hold open (see :func:`connection_cap`).
    """

    def __init__(self, limit: int, total: int = 1 << 20):
        self.limit = limit
        self.total = total
        self.open: Counter[str] = Counter()
        self.open_total = 0
        #: connections closed at once because their client (or everyone) was over a limit
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
        over_client = guard.open[key] >= guard.limit
        if over_client or guard.open_total >= guard.total:
            guard.refused += 1
            if guard.refused <= 3 or guard.refused % 100 == 0:
                if over_client:
                    log.warning("closing a connection from %s: %d already open "
                                "(security.max_connections_per_client; %d refused so far)",
                                key, guard.open[key], guard.refused)
                else:
                    log.warning("closing a connection from %s: %d connections open in all "
                                "(security.max_connections, below LimitNOFILE; %d refused "
                                "so far)", key, guard.open_total, guard.refused)
            transport.abort()  # type: ignore[attr-defined]
            return
        guard.open[key] += 1
        guard.open_total += 1
        self._key = key
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._key is not None:
            self._guard.open[self._key] -= 1
            self._guard.open_total -= 1
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


