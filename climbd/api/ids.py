"""Path ids of the API: ``{id}`` of a route as an int, or the resource's own 404.

Every handler takes its id through here (one parser, :func:`climbd.ids.parse_id`), so a
malformed id is answered exactly like an unknown one (404), never with a 500.
"""

from __future__ import annotations

from aiohttp import web

from climbd.errors import ExportNotFound, SessionNotFound
from climbd.ids import parse_id

__all__ = ["path_id", "session_id"]


def path_id(request: web.Request, what: str, name: str = "id") -> int:
    """The route's ``{name}`` as an id.

    Args:
        what: the resource, for the error message: "session", "export", "share"...

    Raises:
        SessionNotFound: ``what`` is "session" and the segment is not an id.
        ExportNotFound: any other ``what`` (404 "no <what> with id ...").
    """
    raw = request.match_info[name]
    ident = parse_id(raw)
    if ident is None:
        if what == "session":
            raise SessionNotFound(raw)
        raise ExportNotFound(what, raw)
    return ident


def session_id(request: web.Request) -> int:
    """The route's ``{id}`` as a session id.

    Raises:
        SessionNotFound: not an id (404, like an unknown session).
    """
    return path_id(request, "session")
