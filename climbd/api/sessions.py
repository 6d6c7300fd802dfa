"""Session routes: list, detail, edit, delete, pose time ranges, video."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from aiohttp import web

from climbd.api.ids import session_id as _session_id
from climbd.api.keys import DB, PATHS, RECORDER
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody, PoseWindow, SessionList, SessionOut, SessionPatch
from climbd.storage.attempts import AttemptStore

__all__ = ["add_routes", "session_out"]

_404 = ("No such session", ErrorBody)


def session_out(rec: Any, attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API form of a stored session record (``attempts``: its attempts, see
    :mod:`climbd.api.attempts`; ``[]`` when none are known)."""
    data = rec.to_dict() if hasattr(rec, "to_dict") else rec.model_dump()
    sid = data["id"]
    video = data.pop("video_path", None)
    out = {k: data.get(k) for k in SessionOut.model_fields if k in data}
    out["video_url"] = f"/api/sessions/{sid}/video" if video else None
    out["poses_url"] = f"/api/sessions/{sid}/poses"
    out["attempts"] = attempts or []
    return SessionOut.model_validate(out).model_dump()


def _float_query(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be a number") from None
    if not math.isfinite(value):
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be finite")
    return value


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be in [{lo}, {hi}]")
    return value


@operation("List sessions, newest first", tags=("sessions",),
           query={"limit": ("integer", "page size, 1-200 (default 20)"),
                  "offset": ("integer", "sessions to skip (default 0)")},
           responses={200: ("A page of sessions", SessionList), 400: ("Bad query", ErrorBody)},
           access="wall")
async def list_sessions(request: web.Request) -> web.Response:
    """``GET /api/sessions``."""
    limit = _int_query(request, "limit", 20, 1, 200)
    offset = _int_query(request, "offset", 0, 0, 10**9)
    db = request.app[DB]
    items, total = await db.list_sessions(limit=limit, offset=offset)
    attempts = await AttemptStore(db).for_sessions([r.id for r in items])
    return web.json_response({"items": [session_out(r, attempts.get(r.id)) for r in items],
                              "total": total, "limit": limit, "offset": offset})


@operation("One session", tags=("sessions",),
           responses={200: ("The session", SessionOut), 404: _404}, access="wall")
async def get_session(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}``."""
    db = request.app[DB]
    rec = await db.get_session(_session_id(request))
    return web.json_response(session_out(rec, await AttemptStore(db).for_session(rec.id)))


@operation("Edit a session's name, description, climber or pin (pinned: never deleted "
           "automatically)", tags=("sessions",),
           request=SessionPatch,
           responses={200: ("The session", SessionOut), 404: _404, 422: ("Invalid", ErrorBody)},
           access="wall")
async def patch_session(request: web.Request, body: SessionPatch) -> web.Response:
    """``PATCH /api/sessions/{id}``."""
    sid = _session_id(request)
    rec = await request.app[DB].update_session(
        sid, name=body.name, description=body.description, climber=body.climber,
        pinned=body.pinned)
    return web.json_response(session_out(rec))


@operation("Delete a session and its files", tags=("sessions",),
           responses={200: ("The deleted session", SessionOut), 404: _404,
                      409: ("It is recording", ErrorBody)}, access="admin")
async def delete_session(request: web.Request) -> web.Response:
    """``DELETE /api/sessions/{id}``."""
    rec = await request.app[RECORDER].delete(_session_id(request))
    return web.json_response(session_out(rec))


def _nested(a: np.ndarray) -> list[Any]:
    rounded = np.round(a.astype(np.float64), 5)
    return [[[None if math.isnan(v) else v for v in lm] for lm in frame]
            for frame in rounded.tolist()]


@operation("Pose rows in a time range (lazy loading)", tags=("sessions",),
           query={"start": ("number", "seconds from the session start (default 0)"),
                  "end": ("number", "seconds from the session start (default: the end)"),
                  "format": ("string", "'json' (default) or 'bin': one binary posecodec "
                                       "chunk, see climbd.api.replay")},
           responses={200: ("Pose rows", PoseWindow), 400: ("Bad range", ErrorBody), 404: _404},
           access="wall")
async def get_poses(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/poses?start=&end=&format=``."""
    sid = _session_id(request)
    start = _float_query(request, "start")
    end = _float_query(request, "end")
    if start is not None and end is not None and end < start:
        raise web.HTTPBadRequest(text="end must not be before start")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "bin"):
        raise web.HTTPBadRequest(text="query parameter 'format' must be 'json' or 'bin'")
    db = request.app[DB]
    rec = await db.get_session(sid)
    series = await db.poses(sid, start, end)
    if fmt == "bin":  # replay: binary window (climbd.api.replay)
        from climbd.api.replay import binary_poses_response

        return binary_poses_response(sid, start if start is not None else 0.0,
                                     end if end is not None else rec.duration_s, series,
                                     # pose still being filled in: not cacheable yet
                                     rec.status if rec.pose_status == "complete"
                                     else "recording")
    return web.json_response({
        "session_id": sid,
        "start": start if start is not None else 0.0,
        "end": end if end is not None else rec.duration_s,
        "frames": series.frames.tolist(),
        "t": np.round(series.times, 6).tolist(),
        "image": _nested(series.image),
        "world": _nested(series.world),
    })


@operation("The session's video (MP4, HTTP range requests supported)", tags=("sessions",),
           responses={200: ("video/mp4", "video/mp4"), 206: ("Partial content", "video/mp4"),
                      404: _404}, access="wall")
async def get_video(request: web.Request) -> web.StreamResponse:
    """``GET /api/sessions/{id}/video``."""
    sid = _session_id(request)
    rec = await request.app[DB].get_session(sid)
    if not rec.video_path:
        raise web.HTTPNotFound(text=f"session {sid} has no video (status {rec.status})")
    path = request.app[PATHS].resolve_inside(rec.video_path)
    if path is None:
        raise web.HTTPNotFound(text=f"the video of session {sid} is missing")
    return web.FileResponse(path, headers={"Content-Type": "video/mp4"})


def add_routes(app: web.Application) -> None:
    """Register the session routes."""
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{id}", get_session)
    app.router.add_patch("/api/sessions/{id}", patch_session)
    app.router.add_delete("/api/sessions/{id}", delete_session)
    app.router.add_get("/api/sessions/{id}/poses", get_poses)
    app.router.add_get("/api/sessions/{id}/video", get_video)
