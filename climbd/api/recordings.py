"""Recording triggers: start, stop, save the last N seconds, current state.

A recording belongs to the paired device or API token that started it (the caller's
:attr:`~climbd.security.access.Principal.owner`); one started by the admin without a device,
by GPIO or hands-free belongs to the box. Stopping a recording the caller may not see (a
private one of another device) answers only its id and status."""

from __future__ import annotations

from aiohttp import web

from climbd.api.keys import DB, RECORDER
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody, SaveLastRequest, SessionOut, StartRequest
from climbd.api.security import principal_of
from climbd.api.sessions import session_out
from climbd.errors import SessionNotFound
from climbd.security.scope import check_visible
from climbd.storage import SessionRecord

__all__ = ["add_routes"]

_ERR = ("Error", ErrorBody)


@operation("Start recording (optionally from pre_roll_s seconds in the past)",
           tags=("recordings",), request=StartRequest,
           responses={201: ("The new session", SessionOut), 409: ("Already recording", ErrorBody),
                      422: ("Invalid body", ErrorBody), 503: ("No video yet", ErrorBody),
                      507: ("Free space below retention.floor_mb", ErrorBody)},
           access="token")
async def start(request: web.Request, body: StartRequest) -> web.Response:
    """``POST /api/recordings/start``."""
    rec = await request.app[RECORDER].start(
        name=body.name, description=body.description, climber=body.climber,
        pre_roll_s=body.pre_roll_s, owner=principal_of(request).owner)
    return web.json_response(session_out(rec), status=201)


def _visible_out(rec: SessionRecord) -> dict[str, object]:
    """The full record if the caller may see it, else only what a stop button needs."""
    try:
        return session_out(check_visible(rec))
    except SessionNotFound:
        return {"id": rec.id, "status": rec.status, "private": True}


@operation("Stop the running recording", tags=("recordings",),
           responses={200: ("The finished session", SessionOut), 409: ("Not recording", ErrorBody)},
           access="token")
async def stop(request: web.Request) -> web.Response:
    """``POST /api/recordings/stop``."""
    rec = await request.app[RECORDER].stop()
    return web.json_response(_visible_out(rec))


@operation("Save the last N seconds (pre-roll) as a completed session", tags=("recordings",),
           request=SaveLastRequest,
           responses={201: ("The saved session", SessionOut), 409: ("Recording", ErrorBody),
                      422: ("Invalid body, or more seconds than recording.buffer_s",
                            ErrorBody),
                      503: ("No video yet", ErrorBody),
                      507: ("Free space below retention.floor_mb", ErrorBody)},
           access="token")
async def save_last(request: web.Request, body: SaveLastRequest) -> web.Response:
    """``POST /api/recordings/save-last``."""
    rec = await request.app[RECORDER].save_last(
        body.seconds, name=body.name, description=body.description, climber=body.climber,
        owner=principal_of(request).owner)
    return web.json_response(session_out(rec), status=201)


@operation("Current recording state", tags=("recordings",),
           responses={200: ("Recording state", None)}, access="token")
async def current(request: web.Request) -> web.Response:
    """``GET /api/recordings/current``: the name of a private recording of another device
    is not shown."""
    status = request.app[RECORDER].status()
    if status.get("session_id") is not None:
        try:
            await request.app[DB].get_session(int(status["session_id"]))  # as the caller
        except SessionNotFound:
            status["name"] = None
    return web.json_response(status)


def add_routes(app: web.Application) -> None:
    """Register the recording routes."""
    app.router.add_post("/api/recordings/start", start)
    app.router.add_post("/api/recordings/stop", stop)
    app.router.add_post("/api/recordings/save-last", save_last)
    app.router.add_get("/api/recordings/current", current)
