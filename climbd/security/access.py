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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from climbd.security.store import ApiToken, Device
from climbd.visibility import Viewer

__all__ = [
    "ACCESS_RANK",
    "NOT_SESSION_SCOPED",
    "SESSION_SCOPED",
    "Principal",
    "route_access",
    "route_template",
    "session_resource",
]

Role = Literal["anonymous", "token", "wall", "admin"]
Via = Literal["none", "cookie", "bearer", "loopback"]

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
        via: how it was established: 'none', 'cookie', 'bearer' or 'loopback'.
        device: the paired device (from its cookie), also for an admin on a tablet.
        token: the API token used.
    """

    role: Role = "anonymous"
    via: Via = "none"
    device: Device | None = None
    token: ApiToken | None = None

    def may(self, access: str) -> bool:
        """True if this principal may call a route with this access value."""
        return ACCESS_RANK[self.role] >= ACCESS_RANK[access]

    @property
    def viewer(self) -> Viewer:
        """The session-visibility scope of this principal."""
        return Viewer(self.device.id if self.device else None, self.role == "admin")


ANONYMOUS = Principal()


def route_template(request: web.Request) -> str | None:
    """The matched route's template (``/api/sessions/{id}``), or None if nothing matched."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    resource = match.route.resource
    if resource is None:
        return None
    info = resource.get_info()
    return info.get("formatter") or info.get("path") or info.get("prefix")


def route_access(request: web.Request) -> str:
    """The access value that applies to ``request``'s route.

    Unmatched requests are ``anonymous`` (aiohttp answers 404/405 by itself). Routes without
    a declared value are ``admin`` under ``/api`` and for decorated handlers, ``anonymous``
    for undecorated non-API routes (the static web UI).
    """
    match = request.match_info
    if match.http_exception is not None:
        return "anonymous"
    op = getattr(match.handler, "__openapi__", None)
    access = getattr(op, "access", None)
    if access is not None:
        if access not in ACCESS_RANK:
            return "admin"
        return str(access)
    template = route_template(request) or request.path
    if op is not None or template.startswith("/api"):
        return "admin"
    return "anonymous"


def session_resource(template: str) -> Literal["session", "exports", "shares"] | None:
    """What the ``{id}`` of a route template refers to, if it belongs to a session."""
    for pattern, kind in SESSION_SCOPED:
        if pattern.search(template):
            return kind
    return None
