"""Export routes: start an export of a session, follow its progress, download, cancel.

``POST /api/sessions/{id}/exports`` answers ``202 Accepted`` at once with the export
resource (``status: "queued"``); the work runs in a low-priority worker process (see
:mod:`climbd.export.jobs`). Poll ``GET /api/exports/{id}`` for ``status`` (queued, running,
done, failed, cancelled), ``progress`` (0..1) and ``queue_position``; when ``done``,
``file_url`` downloads the file. One export runs at a time (``export.max_concurrent``);
further ones wait in a queue (``queue_position`` 1 = next) of at most ``export.max_queued``,
beyond which the request is refused with 429. ``DELETE /api/exports/{id}`` cancels a queued
or running export and deletes the export and its file.

Errors: 404 unknown session/export, 409 the session is recording or has no video (for a
video export), or the export is not finished (file), 422 bad body, range or speed, 429
queue full.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from climbd.api.ids import path_id
from climbd.api.keys import DB, EXPORTS
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.errors import ExportNotFound, ExportUnavailable
from climbd.export.jobs import ExportManager
from climbd.storage.exports import ExportRecord

__all__ = ["ExportList", "ExportOut", "ExportRequest", "add_routes", "export_out"]


class ExportRequest(BaseModel):
    """``POST /api/sessions/{id}/exports``.

    ``start_s``/``end_s`` are seconds from the session start (omit for the whole session).
    A ``video`` export (stream copy) starts at the keyframe at or before ``start_s``: the
    resource reports ``actual_start_s``/``actual_end_s``. ``speed`` (overlay only) re-times
    frames: 0.25 plays four times slower, with the same frames.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["video", "overlay", "csv", "json"]
    start_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    end_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    speed: float = Field(1.0, ge=0.1, le=1.0, allow_inf_nan=False)


class ExportOut(BaseModel):
    """An export as the API returns it (times in seconds; unix seconds for ``*_at``)."""

    id: int
    session_id: int
    kind: Literal["video", "overlay", "csv", "json"]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    start_s: float | None
    end_s: float | None
    speed: float
    actual_start_s: float | None = Field(None, description="Exported span start (session s)")
    actual_end_s: float | None = Field(None, description="Exported span end (session s)")
    progress: float | None = Field(None, description="0..1 while running; 1 when done")
    frames_done: int | None = None
    frames_total: int | None = None
    queue_position: int | None = Field(None, description="1 = next to run (queued only)")
    frames: int = Field(description="Frames (or pose rows) in the finished file")
    bytes: int
    error: str | None
    note: str
    created_at: float
    finished_at: float | None
    file_url: str | None
    share_url: str = Field(description="POST here to make a share link (QR code)")


class ExportList(BaseModel):
    """Exports, newest first."""

    items: list[ExportOut]


def export_out(rec: ExportRecord, manager: ExportManager | None) -> dict[str, Any]:
    """The API form of an export row, merged with its live progress."""
    live = manager.progress(rec.id) if manager is not None else {}
    progress = live.get("progress")
    if rec.status == "done":
        progress = 1.0
    out = {
        **{k: getattr(rec, k) for k in (
            "id", "session_id", "kind", "status", "start_s", "end_s", "speed",
            "actual_start_s", "actual_end_s", "frames", "bytes", "error", "note",
            "created_at", "finished_at")},
        "progress": progress,
        "frames_done": live.get("frames_done"),
        "frames_total": live.get("frames_total"),
        "queue_position": live.get("queue_position"),
        "file_url": f"/api/exports/{rec.id}/file" if rec.status == "done" else None,
        "share_url": f"/api/exports/{rec.id}/share",
    }
    return ExportOut.model_validate(out).model_dump()


def manager_of(request: web.Request) -> ExportManager:
    """The app's export manager.

    Raises:
        web.HTTPServiceUnavailable: exports are not running (app not started).
    """
    manager = request.app.get(EXPORTS)
    if manager is None:
        raise web.HTTPServiceUnavailable(text="exports are not available")
    return manager


_ERR = ErrorBody


@operation("Export a session (video as recorded, skeleton burned in, or pose CSV/JSON)",
           tags=("exports",), request=ExportRequest,
           responses={202: ("Queued; poll the export", ExportOut),
                      404: ("No such session", _ERR),
                      409: ("Session recording, or no video for a video export", _ERR),
                      422: ("Bad body, range or speed", _ERR), 429: ("Queue full", _ERR)},
           access="wall")
async def create_export(request: web.Request, body: ExportRequest) -> web.Response:
    """``POST /api/sessions/{id}/exports``."""
    sid = path_id(request, "session")
    manager = manager_of(request)
    rec = await manager.submit(sid, body.kind, body.start_s, body.end_s, body.speed)
    return web.json_response(export_out(rec, manager), status=202,
                             headers={"Location": f"/api/exports/{rec.id}"})


@operation("Exports of one session, newest first", tags=("exports",),
           responses={200: ("Exports", ExportList), 404: ("No such session", _ERR)}, access="wall")
async def list_session_exports(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/exports``."""
    sid = path_id(request, "session")
    manager = manager_of(request)
    await request.app[DB].get_session(sid)
    items = await manager.store.list_exports(sid)
    return web.json_response({"items": [export_out(r, manager) for r in items]})


@operation("All exports, newest first (the last 100)", tags=("exports",),
           responses={200: ("Exports", ExportList)}, access="admin")
async def list_exports(request: web.Request) -> web.Response:
    """``GET /api/exports``."""
    manager = manager_of(request)
    items = await manager.store.list_exports(limit=100)
    return web.json_response({"items": [export_out(r, manager) for r in items]})


@operation("One export: status, progress, actual range, file URL", tags=("exports",),
           responses={200: ("The export", ExportOut), 404: ("No such export", _ERR)}, access="wall")
async def get_export(request: web.Request) -> web.Response:
    """``GET /api/exports/{id}``."""
    manager = manager_of(request)
    rec = await manager.store.get(path_id(request, "export"))
    return web.json_response(export_out(rec, manager))


@operation("Download a finished export (range requests supported)", tags=("exports",),
           responses={200: ("The file (video/mp4, text/csv or application/json)", "video/mp4"),
                      206: ("Partial content", "video/mp4"), 404: ("No such export", _ERR),
                      409: ("Not finished", _ERR)}, access="wall")
async def get_export_file(request: web.Request) -> web.StreamResponse:
    """``GET /api/exports/{id}/file``."""
    manager = manager_of(request)
    rec = await manager.store.get(path_id(request, "export"))
    if rec.status != "done":
        raise ExportUnavailable(f"export {rec.id} is {rec.status}, not done")
    path = manager.file_path(rec)
    if path is None:
        raise ExportNotFound("export file for export", rec.id)
    return file_response(path, rec.kind, download=True)


_TYPES = {"video": "video/mp4", "overlay": "video/mp4", "csv": "text/csv; charset=utf-8",
          "json": "application/json"}


def file_response(path: Any, kind: str, *, download: bool) -> web.FileResponse:
    """A FileResponse of an export file with its media type and file name."""
    disposition = "attachment" if download else "inline"
    return web.FileResponse(path, headers={
        "Content-Type": _TYPES.get(kind, "application/octet-stream"),
        "Content-Disposition": f'{disposition}; filename="{path.name}"',
    })


@operation("Cancel (if queued or running) and delete an export and its file",
           tags=("exports",),
           responses={200: ("The deleted export", ExportOut), 404: ("No such export", _ERR)},
           access="wall")
async def delete_export(request: web.Request) -> web.Response:
    """``DELETE /api/exports/{id}``."""
    manager = manager_of(request)
    rec = await manager.delete(path_id(request, "export"))
    return web.json_response(export_out(rec, None))


def add_routes(app: web.Application) -> None:
    """Register the export routes."""
    app.router.add_post("/api/sessions/{id}/exports", create_export)
    app.router.add_get("/api/sessions/{id}/exports", list_session_exports)
    app.router.add_get("/api/exports", list_exports)
    app.router.add_get("/api/exports/{id}", get_export)
    app.router.add_get("/api/exports/{id}/file", get_export_file)
    app.router.add_delete("/api/exports/{id}", delete_export)
