"""``GET /api/ghost/stats``: the ghost players (one per live viewer that uses one).

The players themselves are :class:`climbd.ghost.live.GhostService`, built by the daemon and
plugged into the live view's data channels; this module only maps HTTP.
"""

from __future__ import annotations

from aiohttp import web

from climbd.api.keys import GHOST
from climbd.api.openapi import operation

__all__ = ["add_routes"]


@operation("Ghost players (one per live viewer that uses one): state, messages, pacing",
           tags=("live",), access="wall",
           responses={200: ("Counters; late_ms = sent minus due time of ghost poses", None)})
async def ghost_stats(request: web.Request) -> web.Response:
    """``GET /api/ghost/stats``."""
    service = request.app.get(GHOST)
    return web.json_response(service.stats() if service is not None
                             else {"players": [], "created": 0})


def add_routes(app: web.Application) -> None:
    """Register ``/api/ghost/stats``."""
    app.router.add_get("/api/ghost/stats", ghost_stats, allow_head=False)
