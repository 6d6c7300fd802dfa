"""WHEP signalling for the live view (draft-ietf-wish-whep-02, shaped like WHIP, RFC 9725).

Routes:

- ``POST /api/whep`` with ``Content-Type: application/sdp`` and the viewer's offer:
  ``201 Created``, the answer SDP (all our ICE candidates in it, §4.4.2), ``Location`` of the
  session, ``ETag`` of its ICE session (§4.4.1), one ``Link: <url>; rel="ice-server"`` per
  configured STUN/TURN server (§4.7, RFC 8288). Errors: 415 (not ``application/sdp``), 400
  (malformed SDP), 422 (well-formed but nothing we can send: no video section, no H.264,
  wrong direction), 503 with ``Retry-After`` when ``webrtc.max_viewers`` are connected
  (§4.6, RFC 9110 §15.6.4).
- ``DELETE /api/whep/{id}``: ends the session, ``200 OK`` (§4.3); 404 if unknown.
- ``PATCH /api/whep/{id}`` with ``application/trickle-ice-sdpfrag`` (RFC 8840): trickled
  candidates, ``204 No Content``; ``If-Match`` required (428 without, 412 if it is not the
  ETag); an ICE restart (new ufrag/pwd or ``If-Match: *``) gets 422: trickle is supported,
  restarts are not (§4.4.1).
- ``OPTIONS`` on both: ``200 OK`` with ``Allow``, ``Accept-Post``/``Accept-Patch`` and CORS
  headers (§4.3: WHEP endpoints MUST support OPTIONS for CORS, Fetch standard).
- ``GET`` on both: ``204 No Content`` (§4.1: no representation is defined).

Errors are ``application/problem+json`` (RFC 9457, as WHEP §4.1 suggests) that also carry
the API's usual ``error``/``message`` members.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from climbd.api.keys import LIVE
from climbd.api.openapi import operation
from climbd.api.status import status_for
from climbd.errors import (
    CandidateError,
    DelayOutOfRange,
    OfferError,
    UnknownViewer,
    ViewerLimitReached,
)
from climbd.streaming import WhepEndpoint

__all__ = ["Problem", "add_routes", "answer_offer", "cors", "endpoint_of", "preflight",
           "problem"]

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
#: Seconds a refused viewer is told to wait (Retry-After, RFC 9110 §10.2.3).
RETRY_AFTER_S = 5
_EXPOSE = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After"


class Problem(BaseModel):
    """RFC 9457 problem details, plus the API's usual ``error`` and ``message`` members."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error: str
    message: str


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None
            ) -> web.Response:
    """An ``application/problem+json`` response (RFC 9457 §3) with CORS headers."""
    title = web.Response(status=status).reason
    body = Problem(title=title, status=status, detail=detail, error=code, message=detail)
    resp = web.json_response(body.model_dump(), status=status, headers=headers or {},
                             content_type="application/problem+json")
    return cors(resp)


_R = TypeVar("_R", bound=web.StreamResponse)


def cors(resp: _R) -> _R:
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Access-Control-Expose-Headers"] = _EXPOSE
    return resp


def endpoint_of(request: web.Request) -> WhepEndpoint:
    """The application's WHEP endpoint.

    Raises:
        web.HTTPServiceUnavailable: the live view is not running (startup or shutdown).
    """
    endpoint = request.app.get(LIVE)
    if endpoint is None:
        raise web.HTTPServiceUnavailable(text="the live view is not running")
    return endpoint


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


@operation(
    "Start a live viewer session (WHEP): SDP offer in, SDP answer out",
    tags=("live",), request=SDP,
    responses={
        201: ("Answer SDP; Location = the session URL, ETag, Link rel=ice-server", SDP),
        400: ("Malformed SDP", Problem), 415: ("Not application/sdp", Problem),
        422: ("Offer without an H.264 recvonly video section", Problem),
        503: ("Viewer limit reached (Retry-After)", Problem),
    }, access="wall")
async def post_offer(request: web.Request) -> web.StreamResponse:
    """``POST /api/whep``."""
    return await answer_offer(request)


async def answer_offer(request: web.Request, delayed: bool = False,
                       delay_s: float | None = None) -> web.StreamResponse:
    """Answer the SDP offer in ``request`` (a live viewer, or a delayed one when
    ``delayed``; see :meth:`climbd.streaming.WhepEndpoint.create`) as WHEP §4.2 says."""
    if _media_type(request) != SDP:
        return problem(415, "unsupported-media-type",
                       f"the offer must be sent as {SDP} (WHEP §4.2)", {"Accept-Post": SDP})
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "malformed-sdp", "the offer is not UTF-8 text")
    endpoint = endpoint_of(request)
    try:
        session, answer = await endpoint.create(text, delay_s=delay_s, delayed=delayed)
    except DelayOutOfRange as exc:
        return problem(status_for(exc), exc.code, str(exc))
    except ViewerLimitReached as exc:
        return problem(status_for(exc), exc.code, str(exc),
                       {"Retry-After": str(RETRY_AFTER_S)})
    except OfferError as exc:
        return problem(status_for(exc), exc.code, str(exc))  # 400 malformed, 422 unsatisfiable
    headers = {
        "Location": f"/api/whep/{session.id}",
        "ETag": session.etag,
        "Accept-Patch": SDPFRAG,
    }
    resp = web.Response(status=201, text=answer, content_type=SDP, headers=headers)
    for url in endpoint.config.ice_servers:
        resp.headers.add("Link", f'<{url}>; rel="ice-server"')
    return cors(resp)


@operation("CORS preflight / capabilities of the WHEP endpoint", tags=("live",),
           responses={200: ("Allow, Accept-Post and CORS headers", None)}, access="anonymous")
async def options_endpoint(request: web.Request) -> web.StreamResponse:
    """``OPTIONS /api/whep``."""
    return preflight("OPTIONS, GET, POST", {"Accept-Post": SDP})


@operation("The WHEP endpoint has no representation", tags=("live",),
           responses={204: ("No content (WHEP §4.1)", None)}, access="anonymous")
async def get_endpoint(request: web.Request) -> web.StreamResponse:
    """``GET /api/whep``."""
    return cors(web.Response(status=204))


def preflight(methods: str, extra: dict[str, str]) -> web.StreamResponse:
    resp = web.Response(status=200, headers={
        "Allow": methods,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
        "Access-Control-Max-Age": "600",
        **extra,
    })
    return cors(resp)


@operation("End a live viewer session (WHEP)", tags=("live",),
           responses={200: ("Session ended", None), 404: ("No such session", Problem)},
           access="wall")
async def delete_session(request: web.Request) -> web.StreamResponse:
    """``DELETE /api/whep/{id}``."""
    try:
        await endpoint_of(request).delete(request.match_info["id"])
    except UnknownViewer as exc:
        return problem(status_for(exc), exc.code, str(exc))
    return cors(web.Response(status=200))


@operation("Trickle ICE candidates into a live viewer session (RFC 8840 fragment)",
           tags=("live",), request=SDPFRAG,
           responses={204: ("Candidates added", None), 400: ("Malformed fragment", Problem),
                      404: ("No such session", Problem),
                      412: ("If-Match is not the session's ETag", Problem),
                      415: ("Not application/trickle-ice-sdpfrag", Problem),
                      422: ("ICE restart (not supported)", Problem),
                      428: ("If-Match missing", Problem)}, access="wall")
async def patch_session(request: web.Request) -> web.StreamResponse:
    """``PATCH /api/whep/{id}``."""
    try:
        session = endpoint_of(request).get(request.match_info["id"])
    except UnknownViewer as exc:
        return problem(status_for(exc), exc.code, str(exc))
    if _media_type(request) != SDPFRAG:
        return problem(415, "unsupported-media-type", f"PATCH bodies must be {SDPFRAG}",
                       {"Accept-Patch": SDPFRAG})
    if_match = request.headers.get("If-Match")
    if if_match is None:
        return problem(428, "precondition-required",
                       "If-Match with the session's ETag is required (WHEP §4.4.1)")
    if if_match.strip() == "*":
        return problem(422, "ice-restart", "ICE restarts are not supported; trickle ICE is")
    if session.etag not in [t.strip() for t in if_match.split(",")]:
        return problem(412, "precondition-failed", "If-Match does not match the ICE session")
    try:
        fragment = (await request.read()).decode("utf-8")
        await session.add_candidates(fragment)
    except UnicodeDecodeError:
        return problem(400, "bad-candidate", "the fragment is not UTF-8 text")
    except CandidateError as exc:
        return problem(status_for(exc), exc.code, str(exc))  # 422 ICE restart, else 400
    return cors(web.Response(status=204))


@operation("CORS preflight / capabilities of a WHEP session", tags=("live",),
           responses={200: ("Allow, Accept-Patch and CORS headers", None)}, access="anonymous")
async def options_session(request: web.Request) -> web.StreamResponse:
    """``OPTIONS /api/whep/{id}``."""
    return preflight("OPTIONS, GET, PATCH, DELETE", {"Accept-Patch": SDPFRAG})


@operation("A WHEP session has no representation", tags=("live",),
           responses={204: ("The session exists", None), 404: ("No such session", Problem)},
           access="wall")
async def get_session(request: web.Request) -> web.StreamResponse:
    """``GET /api/whep/{id}``."""
    try:
        endpoint_of(request).get(request.match_info["id"])
    except UnknownViewer as exc:
        return problem(status_for(exc), exc.code, str(exc))
    return cors(web.Response(status=204))


def add_routes(app: web.Application) -> None:
    """Register the WHEP routes."""
    app.router.add_post("/api/whep", post_offer)
    app.router.add_route("OPTIONS", "/api/whep", options_endpoint)
    app.router.add_get("/api/whep", get_endpoint, allow_head=False)
    app.router.add_delete("/api/whep/{id}", delete_session)
    app.router.add_patch("/api/whep/{id}", patch_session)
    app.router.add_route("OPTIONS", "/api/whep/{id}", options_session)
    app.router.add_get("/api/whep/{id}", get_session, allow_head=False)
