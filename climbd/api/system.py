"""System routes: health and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from climbd import __version__
from climbd.api.keys import HEALTH
from climbd.api.openapi import OPENAPI, DocumentCache, operation

__all__ = ["add_routes"]


@operation("Health of capture, pose, video, recording and storage", tags=("system",),
           responses={200: ("Health report", None)}, access="anonymous")
async def health(request: web.Request) -> web.Response:
    """``GET /api/health``: ``status`` is ``ok`` or ``degraded`` plus each stage's state."""
    return web.json_response(request.app[HEALTH]())


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
