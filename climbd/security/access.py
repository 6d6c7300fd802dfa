"""Roles, principals and the access rule of each route.

Access values (the ``access=`` of :func:`climbd.api.openapi.operation`), weakest first:

==============  ===========================================================================
``anonymous``   anyone who can reach the appliance (health, the OpenAPI document, pairing
                and login themselves, CORS preflights)
``share token`` anyone holding a share link: the handler checks the unguessable token in
                the path (``/s/{token}``); session privacy is not applied — the link is a
                deliberate hand-off by someone who could see the session
``token``       an API token (``Authorization: Bearer climbd_...``), a paired device or the
                admin: recording triggers for a wireless button or home automation
``wall``        a paired device or the admin: live view, recording, replay, exports, shares
``admin``       the admin: deleting, settings, paired devices and tokens
==============  ===========================================================================

A route whose handler declares no access (``access=None``) is treated as ``admin``: a new
route is closed until someone decides who may call it (``tests/test_security_access.py``
fails on it too).

API tokens carry a **scope** (``climbd token create --scope ...``, :data:`TOKEN_SCOPES`):

==============  ===========================================================================
``trigger``     the ``token`` routes: start, stop, save-last, current recording
``read``        read-only (GET/HEAD) of everything a paired device may read, except the live
                view: sessions, poses, video, exports, health details
``viewer``      ``read`` plus the live view (WHEP, the ``/api/live`` WebSocket)
``admin``       the admin; only made on the local admin socket (never over HTTP)
==============  ===========================================================================

Pure (no aiohttp): the middleware that applies these rules is :mod:`climbd.api.security`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from climbd.security import store
from climbd.security.store import ApiToken, Device
from climbd.visibility import Viewer

__all__ = [
    "ACCESS_RANK",
    "LIVE_ROUTES",
    "NOT_SESSION_SCOPED",
    "SESSION_SCOPED",
    "TOKEN_SCOPES",
    "Principal",
    "session_resource",
]

Role = Literal["anonymous", "token", "wall", "admin"]
Via = Literal["none", "cookie", "bearer", "loopback", "local"]
Scope = Literal["trigger", "read", "viewer", "admin"]
#: Scopes of API tokens (see the module docstring).
TOKEN_SCOPES: tuple[Scope, ...] = ("trigger", "read", "viewer", "admin")
assert TOKEN_SCOPES == store.TOKEN_SCOPES
#: Role each token scope maps to (``read``/``viewer`` are restricted further by method).
SCOPE_ROLE: dict[str, Role] = {"trigger": "token", "read": "wall", "viewer": "wall",
                               "admin": "admin"}
#: Route templates of the live view (a ``viewer`` token may use them, a ``read`` one not).
LIVE_ROUTES: frozenset[str] = frozenset({"/api/whep", "/api/whep/{id}", "/api/whep/delayed",
                                         "/api/live",
                                         "/api/live/stats", "/api/ghost/stats"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

#: Rank of each access value; a principal may call a route if its role's rank is at least
#: the route's.
ACCESS_RANK: dict[str, int] = {"anonymous": 0, "share token": 0, "token": 1, "wall": 2,
                               "admin": 3}

#: Route templates whose path parameter names a stored object that belongs to a session:
#: (regular expression on the route template, what the ``{id}`` is). The middleware looks
#: the session up and answers a private session of someone else exactly like a missing one.
SESSION_SCOPED: tuple[tuple[re.Pattern[str], Literal["session", "exports", "shares"]], ...] = (
    (re.compile(r"^/api/sessions/\{id\}(/|$)"), "session"),
    (re.compile(r"^/api/exports/\{id\}(/|$)"), "exports"),
    (re.compile(r"^/api/shares/\{id\}(/|$)"), "shares"),
)

#: Route templates with path parameters that do not identify anything of a session (so a
#: new parameterised route must be classified here or in :data:`SESSION_SCOPED`).
NOT_SESSION_SCOPED: frozenset[str] = frozenset({
    "/api/whep/{id}",            # a live viewer session (random id, known to its creator)
    "/api/auth/devices/{id}",    # admin only
    "/api/auth/tokens/{id}",     # admin only
})


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        role: 'anonymous', 'token', 'wall' or 'admin'.
        via: how it was established: 'none', 'cookie', 'bearer', 'loopback' (the opt-in
            ``security.loopback_is_trusted``) or 'local' (the admin Unix socket).
        device: the paired device (from its cookie), also for an admin on a tablet.
        token: the API token used (its ``scope`` narrows the role).
    """

    role: Role = "anonymous"
    via: Via = "none"
    device: Device | None = None
    token: ApiToken | None = None

    def may(self, access: str, method: str = "GET", template: str | None = None) -> bool:
        """True if this principal may call ``method`` on a route with this access value
        (``template``: the route, for the ``read``/``viewer`` token scopes)."""
        if ACCESS_RANK[self.role] < ACCESS_RANK[access]:
            return False
        scope = self.token.scope if self.token is not None else None
        if scope in ("read", "viewer") and access in ("token", "wall"):
            live = template in LIVE_ROUTES
            if live:
                return scope == "viewer"
            return method in _SAFE
        return True

    @property
    def owner(self) -> tuple[int | None, int | None]:
        """(device id, token id) a recording started by this principal belongs to; (None,
        None) is the box itself (GPIO, hands-free, the admin without a device)."""
        if self.device is not None:
            return self.device.id, None
        if self.token is not None and self.token.scope != "admin":
            return None, self.token.id
        return None, None

    @property
    def viewer(self) -> Viewer:
        """The session-visibility scope of this principal."""
        return Viewer(self.device.id if self.device else None, self.role == "admin")


ANONYMOUS = Principal()


def session_resource(template: str) -> Literal["session", "exports", "shares"] | None:
    """What the ``{id}`` of a route template refers to, if it belongs to a session."""
    for pattern, kind in SESSION_SCOPED:
        if pattern.search(template):
            return kind
    return None
