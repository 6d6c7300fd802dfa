"""System routes: health and the OpenAPI document."""

from __future__ import annotations

import json

from aiohttp import web

from climbd import __version__
from climbd.api.keys import HEALTH
from climbd.api.openapi import build_document, operation
from climbd.api.security import principal_of
from climbd.security.health import public_health

__all__ = ["add_routes"]


@operation("Health: anonymous callers get only ok/degraded and general reasons; an API "
           "token, a paired device or the admin gets every stage", tags=("system",),
           responses={200: ("Health report", None)}, access="anonymous")
async def health(request: web.Request) -> web.Response:
    """``GET /api/health``: ``status`` is ``ok`` or ``degraded``; with a role, each stage's
    state too (:mod:`climbd.security.health`)."""
    report = request.app[HEALTH]()
    if principal_of(request).role == "anonymous":
        return web.json_response(public_health(report))
    return web.json_response(report)


_OPENAPI_CACHE: web.AppKey[list[bytes]] = web.AppKey("climbd_openapi_cache", list)


@operation("This OpenAPI document", tags=("system",), responses={200: ("OpenAPI 3.1", None)},
           access="anonymous")
async def openapi(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: built once (the routes do not change after start-up;
    building it costs ~50 ms of CPU) and served from memory."""
    cache = request.app[_OPENAPI_CACHE]
    if not cache:
        cache.append(json.dumps(build_document(request.app, "climbd", __version__)).encode())
    return web.Response(body=cache[0], content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register the system routes."""
    app[_OPENAPI_CACHE] = []
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/openapi.json", openapi)
