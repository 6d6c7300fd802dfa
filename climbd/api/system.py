"""System routes: health and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from climbd import __version__
from climbd.api.keys import HEALTH
from climbd.api.openapi import OPENAPI, DocumentCache, operation
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


@operation("This OpenAPI document", tags=("system",), responses={200: ("OpenAPI 3.1", None)},
           access="anonymous")
async def openapi(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``."""
    return web.json_response(request.app[OPENAPI].get(request.app, "climbd", __version__))


def add_routes(app: web.Application) -> None:
    """Register the system routes."""
    app[OPENAPI] = DocumentCache()
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/openapi.json", openapi)
