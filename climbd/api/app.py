"""The aiohttp application: app factory, error middleware, static web UI.

Handlers live in one module per resource (:mod:`.recordings`, :mod:`.sessions`,
:mod:`.system`; live view in :mod:`.whep` and :mod:`.live`). Every error leaves as JSON
``{"error", "message", "details"}`` with a 4xx status (5xx only for bugs, without a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from climbd import errors
from climbd.api import keys
from climbd.api.openapi import MAX_JSON_BODY, read_json
from climbd.api.status import status_for
from climbd.services import Services

__all__ = ["create_app", "error_response", "read_json", "webui_dir"]

log = logging.getLogger(__name__)

MAX_BODY = MAX_JSON_BODY  # bytes; API bodies are small JSON or SDP


def error_response(status: int, error: str, message: str, details: Any = None
                   ) -> web.Response:
    """A JSON error response."""
    return web.json_response(
        {"error": error, "message": message, "details": details}, status=status)


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
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, type(exc).__name__, str(exc))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error (see the daemon log)")


def webui_dir() -> Path:
    """Where the web UI's static files are: inside the installed package, else the repo."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "webui", here.parent / "webui"):
        if (candidate / "index.html").exists():
            return candidate
    return here.parent / "webui"


_T = TypeVar("_T")


def _put(app: web.Application, key: web.AppKey[_T], value: _T | None) -> None:
    if value is not None:
        app[key] = value


def create_app(services: Services) -> web.Application:
    """The application over ``services``: routes, middleware, static UI. Nothing else.

    Each service goes under its typed key (:mod:`climbd.api.keys`); services left None are
    simply absent (their routes answer 503). No service is built or started here: the
    daemon (:class:`climbd.daemon.Daemon`) owns their lifetimes.
    """
    from climbd.api import (
        attempts,
        auth,
        delayed,
        exports,
        ghost,
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
    app[keys.CONFIG] = services.config
    _put(app, keys.PATHS, services.paths)
    _put(app, keys.DB, services.db)
    _put(app, keys.RECORDER, services.recorder)
    _put(app, keys.HEALTH, services.health)
    _put(app, keys.EXPORTS, services.exports)
    _put(app, keys.LIVE, services.live)
    _put(app, keys.GHOST, services.ghost)
    _put(app, keys.MEDIA, services.media)
    _put(app, keys.AUTH_STORE, services.auth)
    _put(app, keys.SYSTEM, services.system)
    _put(app, keys.ATTEMPTS, services.attempts)
    _put(app, keys.SHARES, services.shares)
    auth.add_routes(app)  # the security layer (climbd.security) and the /api/auth routes
    system.add_routes(app)
    operator.add_routes(app)
    recordings.add_routes(app)
    sessions.add_routes(app)
    attempts.add_routes(app)
    exports.add_routes(app)
    shares.add_routes(app)
    delayed.add_routes(app)  # /api/whep/delayed before /api/whep/{id}
    whep.add_routes(app)
    live.add_routes(app)
    replay.add_routes(app)
    ghost.add_routes(app)
    ui = webui_dir()
    if ui.exists():
        async def index(request: web.Request) -> web.FileResponse:
            return web.FileResponse(ui / "index.html")

        app.router.add_get("/", index)
        app.router.add_static("/ui/", ui, follow_symlinks=False)
    return app
