"""Live connections (``/api/live`` WebSockets, WHEP peers) per credential: caps, and cutting
a credential off.

A live connection outlives the request that opened it, so checking the cookie or token at
the handshake is not enough: when a device is unpaired or a token revoked, every
connection it opened must end at once. :class:`LiveConnections` keeps, per owner key
(:func:`owner_key`: ``"device 3"``, ``"token 7"``), the close callbacks of its open
connections, and refuses a new one beyond the owner's cap (``security.max_viewers_per_device``,
``security.max_websockets_per_device``) so one device cannot hold every slot.

Pure (no aiohttp): the API registers a callback that closes its WebSocket or peer
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

__all__ = ["LiveConnections", "TooManyLive", "owner_key"]

log = logging.getLogger(__name__)

Kind = Literal["ws", "whep"]
Closer = Callable[[], Awaitable[object]]


class TooManyLive(Exception):
    """The owner already holds its cap of live connections of this kind."""

    def __init__(self, kind: str, cap: int):
        what = "live WebSockets" if kind == "ws" else "live viewers"
        super().__init__(f"this device already holds {cap} {what}; close one first")
        self.kind = kind
        self.cap = cap


def owner_key(device_id: int | None, token_id: int | None) -> str | None:
    """The key of a credential's live connections: ``device N``, ``token N`` or None (the
    admin without a device, or the opt-in trusted loopback: not capped, never cut off)."""
    if device_id is not None:
        return f"device {device_id}"
    if token_id is not None:
        return f"token {token_id}"
    return None


class LiveConnections:
    """Open live connections by owner key and kind.

    Attributes:
        per_owner: cap per kind ('ws', 'whep'); a kind missing here is not capped.
    """

    def __init__(self, per_owner: dict[str, int] | None = None):
        self.per_owner: dict[str, int] = dict(per_owner or {})
        self._open: dict[str, dict[int, tuple[Kind, Closer, Callable[[], bool]]]] = {}
        self._next = 0

    def count(self, owner: str | None, kind: Kind) -> int:
        """How many live connections of ``kind`` ``owner`` holds (ended ones, whose
        ``alive()`` is False, are forgotten here)."""
        if owner is None:
            return 0
        conns = self._open.get(owner, {})
        for handle, (_, _, alive) in list(conns.items()):
            if not alive():
                del conns[handle]
        return sum(1 for k, _, _ in conns.values() if k == kind)

    def check(self, owner: str | None, kind: Kind) -> None:
        """Raise :class:`TooManyLive` if ``owner`` may not open one more ``kind``."""
        cap = self.per_owner.get(kind)
        if owner is not None and cap is not None and self.count(owner, kind) >= cap:
            raise TooManyLive(kind, cap)

    def register(self, owner: str | None, kind: Kind, close: Closer,
                 alive: Callable[[], bool] = lambda: True) -> int:
        """Add a connection; returns a handle for :meth:`unregister` (-1 for no owner).

        Args:
            close: ends the connection (awaited by :meth:`cut_off`).
            alive: False once the connection ended by itself (then it no longer counts).

        Raises:
            TooManyLive: ``owner`` already holds its cap of ``kind``.
        """
        if owner is None:
            return -1
        self.check(owner, kind)
        self._next += 1
        self._open.setdefault(owner, {})[self._next] = (kind, close, alive)
        return self._next

    def unregister(self, owner: str | None, handle: int) -> None:
        """Forget a connection that ended (no-op for unknown handles)."""
        if owner is None:
            return
        conns = self._open.get(owner)
        if conns is not None:
            conns.pop(handle, None)
            if not conns:
                del self._open[owner]

    async def cut_off(self, owner: str) -> int:
        """Close every live connection of ``owner`` (its device was unpaired or its token
        revoked); returns how many were closed. A failing close is logged, not raised."""
        conns = self._open.pop(owner, {})
        for kind, close, _ in conns.values():
            try:
                await close()
            except Exception as exc:  # one broken peer must not keep the others open
                log.warning("closing a %s connection of %s failed: %s", kind, owner, exc)
        if conns:
            log.warning("closed %d live connection(s) of %s", len(conns), owner)
        return len(conns)
