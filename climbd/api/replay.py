"""Replay routes: session thumbnails, video frame time tables and binary pose windows.

Routes (all 404 for an unknown session, with the API's JSON error body):

- ``GET /api/sessions/{id}/thumbnail`` — a JPEG (≤ 320 px wide) of the frame nearest the
  middle of the session's video. Made once with PyAV (decode + MJPEG encode,
  :mod:`climbd.replay.thumbnail`) on the daemon's low-priority media worker and cached as
  ``sessions/<id>/thumbnail.jpg`` (remade if the video is newer). 404 when the session
  has no video (still recording, lost in a crash).
- ``GET /api/sessions/{id}/frames?format=json|bin`` — the presentation time (seconds) of
  every frame of the session's video, in order: what a browser needs to turn
  ``video.currentTime`` / ``requestVideoFrameCallback`` ``mediaTime`` into a frame index and
  to seek to the middle of a given frame. Live recordings are variable frame rate (frames are
  stamped with their capture time, and a camera drops frames now and then), so ``index / fps``
  drifts; the table does not. ``bin`` is little-endian float64, 8 bytes per frame (14 kB per
  minute at 30 fps), cached as ``sessions/<id>/frames.f64``.
- ``GET /api/sessions/{id}/poses?format=bin`` (served from :mod:`.sessions`, encoded here) —
  the pose rows of a time window as one :mod:`climbd.storage.posecodec` chunk of format
  version 1 (``WIRE_VERSION``; 936 bytes per frame: 1.7 MB per minute at 30 fps, against
  about 4.5 MB per minute as JSON; the database stores the quantized version 2). The
  browser decodes it with typed arrays.

Why replay video is the session's MP4 over HTTP (range requests), not WebRTC or MSE:

- Frame accuracy: a ``<video>`` element seeks to an exact media time and
  ``requestVideoFrameCallback`` reports the ``mediaTime`` of the frame on screen, which the
  frame table maps to a frame index. WebRTC has no seeking at all (the server would have to
  re-encode from the seek point, with a keyframe, per viewer — about 38 ms per 720p frame on
  this hardware) and no pause that keeps the exact frame.
- Slow motion and frame stepping: ``playbackRate`` works down to 0.0625 in Chrome (measured
  here: 0.1x and 0.25x play every frame at the exact rate) and seeking to the middle of a
  frame shows that frame; over WebRTC both would need a server-side player per viewer.
- Fast seeks: the finalised MP4 has ``moov`` first (``+faststart``), so the browser reads
  the sample index once and then fetches only the byte ranges it needs; a seek costs one
  range request plus decoding from the previous keyframe (GOP of 1 s for live recordings:
  at most 30 frames). MSE would add a JavaScript demuxer/remuxer for the same result.
- No server CPU: the file is served as it lies on disk (sendfile), so replay on several
  tablets costs the appliance nothing while capture and pose keep running.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from climbd.api.ids import session_id
from climbd.api.keys import DB, MEDIA, PATHS
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.replay.media import write_frame_table
from climbd.replay.thumbnail import make_thumbnail
from climbd.storage.posecodec import HEADER_SIZE, WIRE_VERSION, PoseSeries

__all__ = ["add_routes", "binary_poses_response"]

log = logging.getLogger(__name__)

_404 = ("No such session, or it has no video", ErrorBody)


async def _video_of(request: web.Request) -> tuple[int, Any, Path]:
    """(id, record, video file) of the request's session.

    Raises:
        SessionNotFound: unknown session. web.HTTPNotFound: it has no video on disk.
    """
    sid = session_id(request)
    rec = await request.app[DB].get_session(sid)
    if not rec.video_path:
        why = "is still recording" if rec.status == "recording" else (
            f"has no video (status {rec.status}"
            + (f": {rec.error}" if rec.error else "") + ")")
        raise web.HTTPNotFound(text=f"session {sid} {why}")
    video = request.app[PATHS].resolve_inside(rec.video_path)
    if video is None:
        raise web.HTTPNotFound(text=f"the video of session {sid} is missing")
    return sid, rec, video


async def _cached(request: web.Request, video: Path, cache: Path, make: Any) -> None:
    """Make ``cache`` from ``video`` on the media worker unless it is fresh."""
    worker = request.app.get(MEDIA)
    if worker is None:
        raise web.HTTPServiceUnavailable(text="the media worker is not running")
    await worker.cached(video, cache, make)


# -- handlers ------------------------------------------------------------------------------


@operation("A JPEG thumbnail of the session (a frame near the middle), made once and cached",
           tags=("sessions",), access="wall",
           responses={200: ("image/jpeg", "image/jpeg"),
                      404: ("No such session, no video, or it cannot be decoded", ErrorBody)})
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    """``GET /api/sessions/{id}/thumbnail``."""
    sid, rec, video = await _video_of(request)
    thumb = request.app[PATHS].thumbnail(sid)
    try:
        await _cached(request, video, thumb, make_thumbnail)
    except (ValueError, OSError) as exc:
        raise web.HTTPNotFound(text=f"session {sid}: no thumbnail: {exc}") from None
    except Exception as exc:  # av.FFmpegError: a damaged file
        log.warning("session %d: thumbnail failed: %s", sid, exc)
        raise web.HTTPNotFound(text=f"session {sid}: the video cannot be decoded") from None
    cache = "no-cache" if rec.status == "recording" else "private, max-age=86400"
    return web.FileResponse(thumb, headers={"Content-Type": "image/jpeg",
                                            "Cache-Control": cache})


@operation("Presentation time of every video frame (frame-accurate seeking and stepping)",
           tags=("sessions",), access="wall",
           query={"format": ("string", "'json' (default) or 'bin' (float64 little-endian, "
                                       "8 bytes per frame)")},
           responses={200: ("Frame times in seconds", None), 400: ("Bad format", ErrorBody),
                      404: _404})
async def get_frames(request: web.Request) -> web.StreamResponse:
    """``GET /api/sessions/{id}/frames``."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "bin"):
        raise web.HTTPBadRequest(text="query parameter 'format' must be 'json' or 'bin'")
    sid, rec, video = await _video_of(request)
    table = request.app[PATHS].frame_table(sid)
    try:
        await _cached(request, video, table, write_frame_table)
        raw = await asyncio.to_thread(table.read_bytes)
    except Exception as exc:  # ValueError, OSError, av.FFmpegError
        log.warning("session %d: frame table failed: %s", sid, exc)
        raise web.HTTPNotFound(text=f"session {sid}: the video cannot be read") from None
    headers = {"Cache-Control": "no-cache" if rec.status == "recording"
               else "private, max-age=86400", "X-Frame-Count": str(len(raw) // 8)}
    if fmt == "bin":
        return web.Response(body=raw, content_type="application/octet-stream",
                            headers=headers)
    times = np.frombuffer(raw, "<f8")
    return web.json_response({"session_id": sid, "count": len(times), "fps": rec.fps,
                              "times": np.round(times, 6).tolist()}, headers=headers)


def binary_poses_response(session_id: int, start: float, end: float, series: PoseSeries,
                          status: str) -> web.Response:
    """The ``format=bin`` answer of ``GET /api/sessions/{id}/poses``: one posecodec chunk.

    Layout: :mod:`climbd.storage.posecodec` version 1 (16-byte header with the row count
    and a CRC-32 of the body, then times f64, frames i32, image xyz f32, world xyz f32,
    visibility/presence f16; 936 bytes per row). ``X-Pose-Start``/``X-Pose-End`` repeat the
    window (seconds), ``X-Pose-Count`` the rows.
    """
    body = series.encode(version=WIRE_VERSION)
    assert len(body) >= HEADER_SIZE
    final = status != "recording"
    return web.Response(body=body, content_type="application/octet-stream", headers={
        "X-Pose-Start": repr(start), "X-Pose-End": repr(end), "X-Pose-Count": str(len(series)),
        "Cache-Control": "private, max-age=86400" if final else "no-store",
    })


def add_routes(app: web.Application) -> None:
    """Register the thumbnail and frame-table routes."""
    app.router.add_get("/api/sessions/{id}/thumbnail", get_thumbnail)
    app.router.add_get("/api/sessions/{id}/frames", get_frames)
