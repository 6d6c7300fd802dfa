"""The aiohttp application: app factory, error middleware, static web UI.

Handlers live in one module per resource (:mod:`.recordings`, :mod:`.sessions`,
:mod:`.system`; live view in :mod:`.whep` and :mod:`.live`). Every error leaves as JSON
``{"error", "message", "details"}`` with a 4xx status (5xx only for bugs, without a traceback).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from climbd import errors
from climbd.api.keys import DAEMON

if TYPE_CHECKING:
    from climbd.daemon import Daemon

__all__ = ["create_app", "error_response", "webui_dir"]

log = logging.getLogger(__name__)

#: HTTP status for each error class (first match in MRO order wins).
STATUS: dict[type[Exception], int] = {
    errors.SessionNotFound: 404,
    errors.AlreadyRecording: 409,
    errors.NotRecording: 409,
    errors.NoMediaYet: 503,
    errors.BeyondBuffer: 422,
    errors.DiskFullError: 507,
    errors.InsufficientStorage: 507,
    errors.ConfigError: 400,
    errors.ExportError: 400,
    errors.StorageError: 500,
    errors.RecordingError: 409,
}

MAX_BODY = 1024 * 1024  # bytes; API bodies are small JSON or SDP


def error_response(status: int, error: str, message: str, details: Any = None
                   ) -> web.Response:
    """A JSON error response."""
    return web.json_response(
        {"error": error, "message": message, "details": details}, status=status)


def _status_for(exc: errors.ClimbdError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error; log (not leak) unexpected exceptions."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api"):
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"),
                              exc.text or exc.reason)
    except ValidationError as exc:
        details = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                   for e in exc.errors()]
        return error_response(422, "invalid_body", "request body failed validation", details)
    except errors.ClimbdError as exc:
        status = _status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, type(exc).__name__, str(exc))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error (see the daemon log)")


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty).

    Raises:
        web.HTTPBadRequest: not JSON, or not an object.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


def webui_dir() -> Path:
    """Where the web UI's static files are: inside the installed package, else the repo."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "webui", here.parent / "webui"):
        if (candidate / "index.html").exists():
            return candidate
    return here.parent / "webui"


def create_app(daemon: Daemon) -> web.Application:
    """Build the application for ``daemon`` (routes, middleware, static UI)."""
    from climbd.api import (
        auth,
        delayed,
        exports,
        live,
        operator,
        recordings,
        replay,
        sessions,
        shares,
        system,
        whep,
    )

    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[DAEMON] = daemon
    auth.add_routes(app)  # the security layer (climbd.security) and the /api/auth routes
    system.add_routes(app)
    operator.add_routes(app)
    recordings.add_routes(app)
    sessions.add_routes(app)
    exports.add_routes(app)
    shares.add_routes(app)
    delayed.add_routes(app)  # /api/whep/delayed before /api/whep/{id}
    whep.add_routes(app)
    live.add_routes(app)
    replay.add_routes(app)  # thumbnails, frame tables, ghost (after the live view)
    ui = webui_dir()
    if ui.exists():
        async def index(request: web.Request) -> web.FileResponse:
            return web.FileResponse(ui / "index.html")

        app.router.add_get("/", index)
        app.router.add_static("/ui/", ui, follow_symlinks=False)
    return app
