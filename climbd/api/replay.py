"""Replay routes: session thumbnails, video frame time tables and binary pose windows.

Routes (all 404 for an unknown session, with the API's JSON error body):

- ``GET /api/sessions/{id}/thumbnail`` — a JPEG (≤ :data:`THUMB_WIDTH` px wide) of the frame
  nearest the middle of the session's video. Made once with PyAV (decode + MJPEG encode) on
  a low-priority worker thread and cached as ``sessions/<id>/thumbnail.jpg`` (remade if the
  video is newer). 404 when the session has no video (still recording, lost in a crash).
- ``GET /api/sessions/{id}/frames?format=json|bin`` — the presentation time (seconds) of
  every frame of the session's video, in order: what a browser needs to turn
  ``video.currentTime`` / ``requestVideoFrameCallback`` ``mediaTime`` into a frame index and
  to seek to the middle of a given frame. Live recordings are variable frame rate (frames are
  stamped with their capture time, and a camera drops frames now and then), so ``index / fps``
  drifts; the table does not. ``bin`` is little-endian float64, 8 bytes per frame (14 kB per
  minute at 30 fps), cached as ``sessions/<id>/frames.f64``.
- ``GET /api/sessions/{id}/poses?format=bin`` (served from :mod:`.sessions`, encoded here) —
  the pose rows of a time window as one :mod:`climbd.storage.posecodec` chunk, the very
  layout the database stores (936 bytes per frame: 1.7 MB per minute at 30 fps, against
  about 4.5 MB per minute as JSON). The browser decodes it with typed arrays.

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
import concurrent.futures
import contextlib
import fractions
import logging
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from climbd.api.keys import DAEMON
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.errors import SessionNotFound
from climbd.storage.posecodec import HEADER_SIZE, PoseSeries

__all__ = [
    "FRAMES_NAME",
    "THUMB_NAME",
    "THUMB_WIDTH",
    "add_routes",
    "binary_poses_response",
    "frame_times",
    "make_thumbnail",
]

log = logging.getLogger(__name__)

#: Cached files in a session's directory.
THUMB_NAME = "thumbnail.jpg"
FRAMES_NAME = "frames.f64"
#: Thumbnail width, pixels (height keeps the aspect ratio).
THUMB_WIDTH = 320
#: MJPEG quantiser of thumbnails (2 = best .. 31 = worst); 4 gives ~20 kB at 320x427.
THUMB_QUALITY = 4
#: Niceness of the media worker thread (thumbnails, frame tables): capture and pose first.
WORKER_NICENESS = 10

_404 = ("No such session, or it has no video", ErrorBody)


# -- blocking media work (runs on the media worker thread) --------------------------------


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise ValueError("the file has no video stream")
    return container.streams.video[0]


def make_thumbnail(video: Path, out: Path, width: int = THUMB_WIDTH) -> int:
    """Write a JPEG of the frame nearest the middle of ``video`` to ``out`` (atomically).

    Blocking (decodes from the keyframe before the middle); returns the JPEG's size in bytes.

    Raises:
        ValueError: the file has no decodable video frame.
        OSError, av.FFmpegError: the file cannot be read or the JPEG written.
    """
    import av

    frame = None
    with av.open(str(video)) as container:
        stream = _video_stream(container)
        tb = stream.time_base or fractions.Fraction(1, 90000)
        duration = (float(stream.duration * tb) if stream.duration
                    else (container.duration or 0) / 1_000_000)
        target = duration / 2
        if target > 0:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.seek(int(target / tb), stream=stream, backward=True)
        try:
            for f in container.decode(stream):
                frame = f
                if f.time is None or f.time >= target:
                    break
        except av.FFmpegError:
            if frame is None:
                raise
    if frame is None:
        raise ValueError(f"{video} has no decodable video frame")
    w = min(width, frame.width) // 2 * 2
    h = max(2, round(w * frame.height / frame.width / 2) * 2)
    image = frame.reformat(width=w, height=h, format="yuvj420p")
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 25)
    ctx.qmin = ctx.qmax = THUMB_QUALITY
    data = b"".join(bytes(p) for p in [*ctx.encode(image), *ctx.encode(None)])
    _write_atomic(out, data)
    return len(data)


def _boxes(data: bytes | memoryview, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the ISO BMFF boxes in ``data[start:end]``.

    Raises:
        ValueError: a box runs past the end (a damaged file).
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"damaged {kind!r} box")
        yield kind, pos + head, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    for kind in path:
        found = next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    return start, end


def _moov_frame_times(video: Path) -> np.ndarray | None:
    """Frame presentation times from the ``moov`` sample tables of a regular MP4 (ISO/IEC
    14496-12: ``mdhd`` timescale, ``stts`` decode deltas, ``ctts`` composition offsets,
    ``elst`` start offset) without reading a single packet; None when the file is not one
    (fragmented, several edits, no video track): the caller then demuxes."""
    with open(video, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        pos, moov = 0, None
        while pos + 8 <= total:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1:
                size = struct.unpack_from(">Q", head, 8)[0]
            elif size == 0:
                size = total - pos
            if size < 8:
                return None
            if kind == b"moov":
                f.seek(pos)
                moov = f.read(size)
                break
            pos += size
    if moov is None or len(moov) < 8:
        return None
    body = (8, len(moov))
    if _child(moov, *body, b"mvex") is not None:
        return None  # fragmented: the samples are in the fragments
    for kind, s, e in _boxes(moov, *body):
        if kind != b"trak":
            continue
        hdlr = _child(moov, s, e, b"mdia", b"hdlr")
        if hdlr is None or moov[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        mdhd = _child(moov, s, e, b"mdia", b"mdhd")
        stbl = _child(moov, s, e, b"mdia", b"minf", b"stbl")
        if mdhd is None or stbl is None:
            return None
        version = moov[mdhd[0]]
        timescale = struct.unpack_from(">I", moov, mdhd[0] + (20 if version == 1 else 12))[0]
        stts = _child(moov, *stbl, b"stts")
        if stts is None or not timescale:
            return None
        n = struct.unpack_from(">I", moov, stts[0] + 4)[0]
        table = np.frombuffer(moov, ">u4", 2 * n, stts[0] + 8).reshape(n, 2).astype(np.int64)
        dts = np.concatenate([[0], np.cumsum(np.repeat(table[:, 1], table[:, 0]))])[:-1]
        pts = dts.copy()
        ctts = _child(moov, *stbl, b"ctts")
        if ctts is not None:
            signed = moov[ctts[0]] == 1
            m = struct.unpack_from(">I", moov, ctts[0] + 4)[0]
            offs = np.frombuffer(moov, ">i4" if signed else ">u4", 2 * m, ctts[0] + 8)
            offs = offs.reshape(m, 2).astype(np.int64)
            per_sample = np.repeat(offs[:, 1], offs[:, 0])
            if len(per_sample) != len(pts):
                return None
            pts += per_sample
        elst = _child(moov, s, e, b"edts", b"elst")
        if elst is not None:
            v = moov[elst[0]]
            count = struct.unpack_from(">I", moov, elst[0] + 4)[0]
            if count != 1:
                return None  # empty edits or several segments: let the demuxer decide
            media_time = struct.unpack_from(">q" if v == 1 else ">i", moov,
                                            elst[0] + (16 if v == 1 else 12))[0]
            if media_time < 0:
                return None
            pts -= media_time
        return np.sort(pts) / timescale
    return None


def frame_times(video: Path) -> np.ndarray:
    """Presentation time of every frame of ``video``, seconds, ascending (float64).

    A regular MP4 (every finalised session) is read from its ``moov`` sample tables: a few
    hundred kB for a 30-minute session, no packet read. Anything else (a fragmented file
    kept after a failed remux) is demuxed packet by packet (no decoding), stopping at a
    damaged tail like the player would.

    Raises:
        ValueError: no video stream or no frame. OSError, av.FFmpegError: unreadable file.
    """
    import av

    try:
        times = _moov_frame_times(video)
    except (ValueError, struct.error, IndexError) as exc:
        log.info("%s: sample tables unreadable (%s): demuxing instead", video, exc)
        times = None
    if times is not None and len(times):
        return times

    with av.open(str(video)) as container:
        stream = _video_stream(container)
        tb = float(stream.time_base or fractions.Fraction(1, 90000))
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(packet.pts)
        except av.FFmpegError as exc:
            log.warning("%s: frame table stops at a damaged packet: %s", video, exc)
    if not pts:
        raise ValueError(f"{video} has no video frame")
    return np.sort(np.array(pts, np.int64)) * tb


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _fresh(cache: Path, source: Path) -> bool:
    try:
        return cache.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


class _MediaWorker:
    """One low-priority thread for thumbnails and frame tables (never more than one decode
    at a time next to capture and pose), and one lock per cached file."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="climbd-media", initializer=self._nice)
        self.locks: dict[Path, asyncio.Lock] = {}

    @staticmethod
    def _nice() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)

    def lock(self, path: Path) -> asyncio.Lock:
        return self.locks.setdefault(path, asyncio.Lock())

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


_WORKER: web.AppKey[_MediaWorker] = web.AppKey("climbd_replay_worker", _MediaWorker)


# -- helpers -------------------------------------------------------------------------------


def _session_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # not "²" or "٣"
        raise SessionNotFound(raw)
    return int(raw)


async def _video_of(request: web.Request) -> tuple[int, Any, Path, Path]:
    """(id, record, video file, session directory) of the request's session.

    Raises:
        SessionNotFound: unknown session. web.HTTPNotFound: it has no video on disk.
    """
    daemon = request.app[DAEMON]
    sid = _session_id(request)
    rec = await daemon.db.get_session(sid)
    if not rec.video_path:
        why = "is still recording" if rec.status == "recording" else (
            f"has no video (status {rec.status}"
            + (f": {rec.error}" if rec.error else "") + ")")
        raise web.HTTPNotFound(text=f"session {sid} {why}")
    root = daemon.state_dir.resolve()
    video = (daemon.state_dir / rec.video_path).resolve()
    if root not in video.parents or not video.is_file():
        raise web.HTTPNotFound(text=f"the video of session {sid} is missing")
    return sid, rec, video, daemon.state_dir / "sessions" / str(sid)


async def _cached(request: web.Request, video: Path, cache: Path, make: Any) -> None:
    """Make ``cache`` from ``video`` with ``make(video, cache)`` unless it is fresh."""
    worker = request.app[_WORKER]
    async with worker.lock(cache):
        if _fresh(cache, video):
            return
        cache.parent.mkdir(parents=True, exist_ok=True)
        await worker.run(make, video, cache)


def _write_frames(video: Path, out: Path) -> None:
    _write_atomic(out, frame_times(video).astype("<f8").tobytes())


# -- handlers ------------------------------------------------------------------------------


@operation("A JPEG thumbnail of the session (a frame near the middle), made once and cached",
           tags=("sessions",), access="wall",
           responses={200: ("image/jpeg", "image/jpeg"),
                      404: ("No such session, no video, or it cannot be decoded", ErrorBody)})
async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    """``GET /api/sessions/{id}/thumbnail``."""
    sid, rec, video, directory = await _video_of(request)
    thumb = directory / THUMB_NAME
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
    sid, rec, video, directory = await _video_of(request)
    table = directory / FRAMES_NAME
    try:
        await _cached(request, video, table, _write_frames)
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
    body = series.encode()
    assert len(body) >= HEADER_SIZE
    final = status != "recording"
    return web.Response(body=body, content_type="application/octet-stream", headers={
        "X-Pose-Start": repr(start), "X-Pose-End": repr(end), "X-Pose-Count": str(len(series)),
        "Cache-Control": "private, max-age=86400" if final else "no-store",
    })


async def _close_worker(app: web.Application) -> None:
    app[_WORKER].pool.shutdown(wait=False, cancel_futures=True)


def add_routes(app: web.Application) -> None:
    """Register the thumbnail and frame-table routes and, when the live view is installed
    (its routes registered before this), ghost over live (:mod:`climbd.api.ghost`)."""
    app[_WORKER] = _MediaWorker()
    app.router.add_get("/api/sessions/{id}/thumbnail", get_thumbnail)
    app.router.add_get("/api/sessions/{id}/frames", get_frames)
    app.on_cleanup.append(_close_worker)
    try:
        from climbd.api import ghost, whep
    except ImportError:  # pragma: no cover - live view not installed in this build
        return
    if whep.LIVE in app:
        ghost.add_routes(app)
