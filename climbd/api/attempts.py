"""Attempt routes: a session's attempts with their metrics, recompute, the live detector.

The detection and metrics are :mod:`climbd.attempts`; the service that runs them in the
daemon is :class:`climbd.attempt_service.AttemptService`. This module only maps HTTP.
"""

from __future__ import annotations

import functools
import logging

from aiohttp import web

from climbd.api.ids import session_id as _session_id
from climbd.api.keys import ATTEMPTS, DB, MEDIA, PATHS
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.attempt_service import analyse_session, ensure_analysed

__all__ = ["add_routes"]

log = logging.getLogger(__name__)

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


@operation("A JPEG of the attempt's first frame (lift-off), made once and cached",
           tags=("sessions",), access="wall",
           responses={200: ("image/jpeg", "image/jpeg"),
                      404: ("No such session or attempt, or no video", ErrorBody)})
async def attempt_thumbnail(request: web.Request) -> web.StreamResponse:
    """``GET /api/sessions/{id}/attempts/{index}/thumbnail``."""
    from climbd.replay.thumbnail import make_thumbnail

    sid = _session_id(request)
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound(text="no such attempt") from None
    db = request.app[DB]
    rec = await db.get_session(sid)
    found = await ensure_analysed(db, sid)
    if not 0 <= index < len(found):
        raise web.HTTPNotFound(text=f"session {sid} has no attempt {index}")
    video = request.app[PATHS].resolve_inside(rec.video_path) if rec.video_path else None
    if video is None:
        raise web.HTTPNotFound(text=f"session {sid} has no video")
    worker = request.app.get(MEDIA)
    if worker is None:
        raise web.HTTPServiceUnavailable(text="the media worker is not running")
    start = float(found[index]["start_s"])
    out = video.parent / f"attempt-{index}-{round(start * 1000)}.jpg"
    try:
        await worker.cached(video, out, functools.partial(make_thumbnail, at_s=start))
    except (ValueError, OSError) as exc:
        raise web.HTTPNotFound(text=f"session {sid}: no thumbnail: {exc}") from None
    except Exception as exc:  # av.FFmpegError: a damaged file
        log.warning("session %d: attempt thumbnail failed: %s", sid, exc)
        raise web.HTTPNotFound(text=f"session {sid}: the video cannot be decoded") from None
    return web.FileResponse(out, headers={"Content-Type": "image/jpeg",
                                          "Cache-Control": "private, max-age=86400"})


def add_routes(app: web.Application) -> None:
    """Register the attempt routes."""
    app.router.add_get("/api/sessions/{id}/attempts", get_attempts)
    app.router.add_post("/api/sessions/{id}/attempts/recompute", recompute_attempts)
    app.router.add_get("/api/sessions/{id}/attempts/{index}/thumbnail", attempt_thumbnail)
    app.router.add_get("/api/attempts/live", live_attempts)
