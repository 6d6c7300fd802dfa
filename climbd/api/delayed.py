"""WHEP signalling for the delayed live view ("N s ago", :mod:`climbd.streaming.delay`).

- ``POST /api/whep/delayed?delay_s=N`` with an ``application/sdp`` offer: exactly the WHEP
  semantics of ``POST /api/whep`` (201, ``Location: /api/whep/{id}``, ETag, Link), but the
  video is the already-encoded stream ``N`` seconds late and the ``landmarks`` data channel
  carries its poses delayed identically (same binary messages, RTP timestamps of the delayed
  stream; the hello says ``delay_s``). ``N`` defaults to ``live.delay_s`` and must be within
  1 .. ``recording.buffer_s`` (else 422 problem ``delay-out-of-range``; not a number: 400).
  The session is then ended, patched and probed at its ``Location`` like a live one
  (``DELETE``/``PATCH``/``GET /api/whep/{id}``), and counts towards ``webrtc.max_viewers``.
- ``OPTIONS`` / ``GET /api/whep/delayed``: as for ``/api/whep``.

A plain WHEP player (e.g. a browser's WHEP client, OBS, GStreamer ``whepsrc``) plays it by
pointing it at this URL.
"""

from __future__ import annotations

import math

from aiohttp import web

from climbd.api.openapi import operation
from climbd.api.whep import SDP, Problem, answer_offer, cors, preflight, problem

__all__ = ["add_routes"]


def _delay_param(request: web.Request) -> float | None:
    """``delay_s`` from the query string (None when absent).

    Raises:
        ValueError: present but not a finite number.
    """
    raw = request.query.get("delay_s")
    if raw is None or raw.strip() == "":
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


@operation(
    "Start a delayed live viewer session (WHEP): the wall as it was delay_s seconds ago",
    tags=("live",), request=SDP,
    query={"delay_s": ("number", "Delay in seconds, 1..recording.buffer_s (default "
                           "live.delay_s)")},
    responses={
        201: ("Answer SDP; Location = the session URL, ETag, Link rel=ice-server", SDP),
        400: ("Malformed SDP or delay_s", Problem), 415: ("Not application/sdp", Problem),
        422: ("delay_s out of range, or an offer without H.264 recvonly video", Problem),
        503: ("Viewer limit reached (Retry-After)", Problem),
    }, access="wall")
async def post_delayed_offer(request: web.Request) -> web.StreamResponse:
    """``POST /api/whep/delayed``."""
    try:
        delay_s = _delay_param(request)
    except ValueError:
        return problem(400, "bad-delay", "delay_s must be a number of seconds, e.g. "
                       "?delay_s=10")
    return await answer_offer(request, delayed=True, delay_s=delay_s)


@operation("CORS preflight / capabilities of the delayed WHEP endpoint", tags=("live",),
           responses={200: ("Allow, Accept-Post and CORS headers", None)}, access="anonymous")
async def options_delayed(request: web.Request) -> web.StreamResponse:
    """``OPTIONS /api/whep/delayed``."""
    return preflight("OPTIONS, GET, POST", {"Accept-Post": SDP})


@operation("The delayed WHEP endpoint has no representation", tags=("live",),
           responses={204: ("No content (WHEP §4.1)", None)}, access="anonymous")
async def get_delayed(request: web.Request) -> web.StreamResponse:
    """``GET /api/whep/delayed``."""
    return cors(web.Response(status=204))


def add_routes(app: web.Application) -> None:
    """Register the delayed-view WHEP routes (before ``/api/whep/{id}``, which they share
    a prefix with)."""
    app.router.add_post("/api/whep/delayed", post_delayed_offer)
    app.router.add_route("OPTIONS", "/api/whep/delayed", options_delayed)
    app.router.add_get("/api/whep/delayed", get_delayed, allow_head=False)
