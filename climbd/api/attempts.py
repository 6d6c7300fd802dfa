"""Attempt routes: a session's attempts with their metrics, recompute, the live detector.

The detection and metrics are :mod:`climbd.attempts`; the service that runs them in the
daemon is :class:`climbd.attempt_service.AttemptService`. This module only maps HTTP.
"""

from __future__ import annotations

from aiohttp import web

from climbd.api.ids import session_id as _session_id
from climbd.api.keys import ATTEMPTS, DB
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.attempt_service import analyse_session, ensure_analysed

__all__ = ["add_routes"]

_404 = ("No such session", ErrorBody)


@operation("A session's attempts (climber leaves the ground → back on it) with metrics: "
           "time on wall, height gained, hip path, speeds, economy, pauses, joint angle and "
           "centre-of-mass series. Computed after recording/ingest; recomputed here when the "
           "session's pose changed since", tags=("sessions",), access="wall",
           responses={200: ("{session_id, attempts: [{index, start_s, end_s|null, "
                            "duration_s|null, end_reason, metrics}]}", None), 404: _404})
async def get_attempts(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/attempts``."""
    sid = _session_id(request)
    found = await ensure_analysed(request.app[DB], sid)
    return web.json_response({"session_id": sid, "attempts": found})


@operation("Detect and measure a session's attempts again", tags=("sessions",),
           access="wall", responses={200: ("As GET", None), 404: _404})
async def recompute_attempts(request: web.Request) -> web.Response:
    """``POST /api/sessions/{id}/attempts/recompute``."""
    sid = _session_id(request)
    found = await analyse_session(request.app[DB], sid)
    return web.json_response({"session_id": sid, "attempts": found})


@operation("The live attempt detector: state (unknown/ground/wall), the attempt in progress, "
           "the last one, hands-free recording", tags=("live",), access="wall",
           responses={200: ("Live attempt state", None)})
async def live_attempts(request: web.Request) -> web.Response:
    """``GET /api/attempts/live``."""
    service = request.app.get(ATTEMPTS)
    if service is None:
        raise web.HTTPServiceUnavailable(text="attempt detection is not running")
    return web.json_response(service.status())


def add_routes(app: web.Application) -> None:
    """Register the attempt routes."""
    app.router.add_get("/api/sessions/{id}/attempts", get_attempts)
    app.router.add_post("/api/sessions/{id}/attempts/recompute", recompute_attempts)
    app.router.add_get("/api/attempts/live", live_attempts)
