"""Share routes: a QR-code link that hands one finished export to a phone, no pairing.

Management (tablet side, under ``/api``):

- ``POST /api/exports/{id}/share`` → 201 ``{id, url, qr_svg_url, expires_at, ...}``;
- ``GET /api/exports/{id}/shares`` → the export's shares (state only: tokens are not stored);
- ``DELETE /api/shares/{id}`` → revoke now.

Phone side, outside ``/api`` (the token in the path is the only credential):

- ``GET /s/{token}``: a tiny mobile page (``webui/share/``) with the clip and a download
  link; ``GET /s/{token}/file``: the file (``?download=1`` as an attachment; range requests
  work, so the video can seek); ``GET /s/{token}/qr.svg``: the link as a QR code.

A token opens only its own export: there is no other route under ``/s/{token}/``, and
nothing in these handlers takes a session or export id from the request. An unknown token
gets 404 and an expired or revoked one 410, each with a short human-readable page. The
pages send ``Referrer-Policy: no-referrer`` (the token never leaks to another site),
``Cache-Control: no-store`` and a strict Content-Security-Policy.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from climbd import share
from climbd.api.app import webui_dir
from climbd.api.exports import file_response, manager_of
from climbd.api.ids import path_id
from climbd.api.keys import CONFIG, SHARES
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.errors import ClimbdError, ExportError, ExportUnavailable
from climbd.export.jobs import ExportManager
from climbd.storage.exports import ExportRecord
from climbd.storage.shares import ShareRecord, ShareStore

__all__ = ["ShareInfo", "ShareList", "ShareOut", "ShareRequest", "add_routes"]

_TOKEN = r"{token:[A-Za-z0-9_-]{16,64}}"
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_CSP = ("default-src 'none'; media-src 'self'; img-src 'self'; "
             "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")


class ShareRequest(BaseModel):
    """``POST /api/exports/{id}/share``: optional, shorter lifetime than ``share.ttl_s``."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float | None = Field(None, gt=0, allow_inf_nan=False,
                                description="Seconds; capped at share.ttl_s")


class ShareOut(BaseModel):
    """A new share link. ``url`` holds the token: it is shown only in this response."""

    id: int
    export_id: int
    url: str
    qr_svg_url: str
    created_at: float
    expires_at: float


class ShareInfo(BaseModel):
    """A share's state (no token: it is not stored)."""

    id: int
    export_id: int
    state: Literal["active", "expired", "revoked"]
    created_at: float
    expires_at: float
    revoked_at: float | None


class ShareList(BaseModel):
    """The shares of an export, oldest first."""

    items: list[ShareInfo]


def _shares(request: web.Request) -> ShareStore:
    """The share links (503 when the app has none)."""
    shares = request.app.get(SHARES)
    if shares is None:
        raise web.HTTPServiceUnavailable(text="sharing is not available")
    return shares


def _info(s: ShareRecord) -> dict[str, Any]:
    return ShareInfo(id=s.id, export_id=s.export_id, state=s.state(), created_at=s.created_at,
                     expires_at=s.expires_at, revoked_at=s.revoked_at).model_dump()


_ERR = ErrorBody


@operation("Make a short-lived link (and QR code) that opens this export on a phone",
           tags=("shares",), request=ShareRequest,
           responses={201: ("The link (shown once)", ShareOut), 404: ("No such export", _ERR),
                      409: ("Export not finished", _ERR), 422: ("Bad body", _ERR)}, access="wall")
async def create_share(request: web.Request, body: ShareRequest) -> web.Response:
    """``POST /api/exports/{id}/share``."""
    export_id = path_id(request, "export")
    manager = manager_of(request)
    rec = await manager.store.get(export_id)
    if rec.status != "done" or manager.file_path(rec) is None:
        raise ExportUnavailable(f"export {export_id} is {rec.status}: only a finished export "
                                "can be shared")
    config = request.app[CONFIG].share
    try:
        base = share.base_url_for(config.base_url, request.host, request.scheme)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    ttl = min(body.ttl_s, config.ttl_s) if body.ttl_s is not None else config.ttl_s
    token = share.new_token()
    s = await _shares(request).create_share(export_id, share.hash_token(token), base_url=base,
                                         expires_at=time.time() + ttl)
    url = share.share_url(base, token)
    return web.json_response(ShareOut(
        id=s.id, export_id=export_id, url=url, qr_svg_url=f"{url}/qr.svg",
        created_at=s.created_at, expires_at=s.expires_at).model_dump(), status=201)


@operation("The share links of an export (state only)", tags=("shares",),
           responses={200: ("Shares", ShareList), 404: ("No such export", _ERR)}, access="wall")
async def list_shares(request: web.Request) -> web.Response:
    """``GET /api/exports/{id}/shares``."""
    manager = manager_of(request)
    rec = await manager.store.get(path_id(request, "export"))
    items = await _shares(request).shares_of(rec.id)
    return web.json_response({"items": [_info(s) for s in items]})


@operation("Revoke a share link now", tags=("shares",),
           responses={200: ("The revoked share", ShareInfo), 404: ("No such share", _ERR)},
           access="wall")
async def revoke_share(request: web.Request) -> web.Response:
    """``DELETE /api/shares/{id}``."""
    s = await _shares(request).revoke_share(path_id(request, "share"))
    return web.json_response(_info(s))


# -- the phone side ------------------------------------------------------------------------
def _template(name: str) -> str:
    path = webui_dir() / "share" / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:  # a build without the web UI: a bare page still works
        return ("<!doctype html><meta charset=utf-8><meta name=viewport "
                "content='width=device-width'><title>{{title}}</title><h1>{{title}}</h1>"
                "<p>{{message}}</p>{{media}}")


def _render(name: str, **values: str) -> str:
    """Fill ``{{key}}`` placeholders; values are HTML-escaped unless the key ends in
    ``_html``."""
    page = _template(name)
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", value if key.endswith("_html")
                            else html.escape(value))
    return page


def _page(status: int, title: str, message: str) -> web.Response:
    body = _render("gone.html", title=title, message=message)
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={**_SECURITY_HEADERS, "Content-Security-Policy": _PAGE_CSP})


class _Refused(Exception):
    def __init__(self, response: web.Response):
        self.response = response


async def _resolve(request: web.Request) -> tuple[ShareRecord, ExportRecord, Path,
                                                  ExportManager]:
    """The share, export and file a token opens, or raise _Refused with the page to show."""
    token = request.match_info["token"]
    try:
        manager = manager_of(request)
    except web.HTTPServiceUnavailable:
        raise _Refused(_page(503, "Not available", "Sharing is not running on this "
                             "appliance right now.")) from None
    s = await _shares(request).share_by_hash(share.hash_token(token)) \
        if share.looks_like_token(token) else None
    if s is None or not share.token_matches(token, s.token_sha256):
        raise _Refused(_page(404, "Link not found",
                             "This link is not valid. Ask for a new QR code at the wall."))
    state = s.state()
    if state == "revoked":
        raise _Refused(_page(410, "Link revoked",
                             "This link was revoked. Ask for a new QR code at the wall."))
    if state == "expired":
        raise _Refused(_page(410, "Link expired",
                             "This link has expired. Ask for a new QR code at the wall."))
    try:
        rec = await manager.store.get(s.export_id)
    except ExportError:
        rec = None
    path = manager.file_path(rec) if rec is not None else None
    if rec is None or path is None:
        raise _Refused(_page(410, "Clip deleted", "This clip is no longer on the appliance."))
    return s, rec, path, manager


@operation("Share page: the clip and a download link (token in the path)", tags=("shares",),
           responses={200: ("HTML page", "text/html"), 404: ("Unknown link", "text/html"),
                      410: ("Expired or revoked", "text/html")},
           access="share token")
async def share_page(request: web.Request) -> web.Response:
    """``GET /s/{token}``."""
    try:
        s, rec, path, manager = await _resolve(request)
    except _Refused as refused:
        return refused.response
    token = request.match_info["token"]
    try:
        session_name = (await manager.db.get_session(rec.session_id)).name
    except ClimbdError:  # the name is decoration only
        session_name = ""
    file_url = f"/s/{token}/file"
    download_url = f"{file_url}?download=1"
    is_video = rec.kind in ("video", "overlay")
    media_html = (f'<video id="clip" src="{html.escape(file_url)}" controls playsinline '
                  f'preload="metadata" loop></video>') if is_video else ""
    kind_label = {"video": "Video", "overlay": "Video with skeleton",
                  "csv": "Pose data (CSV)", "json": "Pose data (JSON)"}[rec.kind]
    expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.expires_at))
    mb = rec.bytes / 1e6
    body = _render("index.html", title=session_name or "Climbing clip", kind=kind_label,
                   media_html=media_html, download_url=download_url,
                   file_name=path.name, size=f"{mb:.1f} MB", expires=expires)
    return web.Response(text=body, content_type="text/html",
                        headers={**_SECURITY_HEADERS, "Content-Security-Policy": _PAGE_CSP})


@operation("The shared file (range requests supported; ?download=1 for an attachment)",
           tags=("shares",), responses={200: ("The file", "video/mp4"),
                                        206: ("Partial content", "video/mp4"),
                                        404: ("Unknown link", "text/html"),
                                        410: ("Expired or revoked", "text/html")},
           access="share token")
async def share_file(request: web.Request) -> web.StreamResponse:
    """``GET /s/{token}/file``."""
    try:
        _s, rec, path, _m = await _resolve(request)
    except _Refused as refused:
        return refused.response
    response = file_response(path, rec.kind, download=request.query.get("download") == "1")
    response.headers.update(_SECURITY_HEADERS)
    return response


@operation("The share link as a QR code (SVG)", tags=("shares",),
           responses={200: ("SVG", "image/svg+xml"), 404: ("Unknown link", "text/html"),
                      410: ("Expired or revoked", "text/html")},
           access="share token")
async def share_qr(request: web.Request) -> web.Response:
    """``GET /s/{token}/qr.svg``."""
    try:
        s, _rec, _path, _m = await _resolve(request)
    except _Refused as refused:
        return refused.response
    url = share.share_url(s.base_url, request.match_info["token"])
    return web.Response(body=share.qr_svg(url), content_type="image/svg+xml",
                        headers=_SECURITY_HEADERS)


def add_routes(app: web.Application) -> None:
    """Register the share routes (``/api`` management and the ``/s/`` phone pages)."""
    app.router.add_post("/api/exports/{id}/share", create_share)
    app.router.add_get("/api/exports/{id}/shares", list_shares)
    app.router.add_delete("/api/shares/{id}", revoke_share)
    app.router.add_get(f"/s/{_TOKEN}", share_page)
    app.router.add_get(f"/s/{_TOKEN}/file", share_file)
    app.router.add_get(f"/s/{_TOKEN}/qr.svg", share_qr)
