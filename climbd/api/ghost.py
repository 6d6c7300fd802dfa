"""Ghost over live: :class:`climbd.ghost.GhostPlayer` on a live viewer's data channel.

Why the data channel (and not a WebSocket of its own): the ghost is drawn over the live
WebRTC video, frame by frame. Each ghost pose is stamped with the RTP timestamp of the live
frame captured when it falls due (``rtp = origin + (due - epoch) * 90000``), so the page
matches it to the displayed frame with ``requestVideoFrameCallback`` exactly as it matches
the live skeleton — both attempts line up on the video, whatever the network or decoder
latency. The viewer's ``landmarks`` channel already carries that clock, and the channel is
partially reliable (a late ghost pose is dropped, not queued behind newer ones).

The hook: :class:`climbd.streaming.datachannel.LandmarkChannel` dispatches client messages
whose ``type`` it does not know to ``LandmarkChannel.extensions``; :func:`add_routes`
registers ``"ghost"`` there. Each viewer channel gets one player at its first ghost message,
ended when the channel closes. Control messages and the ghost wire format are described in
:mod:`climbd.ghost`. Session visibility: the player runs in the context of the viewer's WHEP
request (aiortc's tasks inherit it), so the catalog shows it only the sessions that viewer
may see.

Routes: ``GET /api/ghost/stats`` (players, messages sent, pacing accuracy).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from climbd.api.keys import DAEMON
from climbd.api.openapi import operation
from climbd.ghost import GhostPlayer, GhostSession
from climbd.storage.posecodec import PoseSeries
from climbd.streaming.datachannel import LandmarkChannel
from climbd.streaming.feed import LandmarkFeed
from climbd.video import CLOCK_RATE

__all__ = ["ChannelHost", "add_routes"]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF


class ChannelHost:
    """A :class:`climbd.ghost.GhostHost` over one viewer's landmark channel.

    Args:
        channel: the viewer's channel (send, RTP origin, shared feed's epoch).
        daemon: the daemon (session catalog, recorder).
    """

    def __init__(self, channel: LandmarkChannel, daemon: Any):
        self.channel = channel
        self.daemon = daemon

    @property
    def is_open(self) -> bool:
        return self.channel.is_open

    async def session(self, session_id: int) -> GhostSession:
        rec = await self.daemon.db.get_session(session_id)
        return GhostSession(rec.id, rec.duration_s, rec.fps, rec.name, rec.frames_with_pose)

    async def poses(self, session_id: int, start: float, end: float | None) -> PoseSeries:
        series: PoseSeries = await self.daemon.db.poses(session_id, start, end)
        return series

    def send(self, data: str | bytes) -> bool:
        return self.channel.send(data)

    def backlog(self) -> int:
        return int(self.channel.channel.bufferedAmount)

    def stamp(self, clock_time: float) -> tuple[int, bool]:
        epoch = self.channel.feed.epoch
        if epoch is None:
            return 0, False
        pts = round((clock_time - epoch) * CLOCK_RATE)
        origin = self.channel.rtp_origin()
        if origin is None:
            return pts & _U32, False
        return (origin + pts) & _U32, True

    def recording_start(self) -> tuple[int, float] | None:
        return self.daemon.recorder.active_session


@dataclass
class _Service:
    """The ghost players of one application."""

    daemon: Any
    players: weakref.WeakKeyDictionary[LandmarkChannel, GhostPlayer] = field(
        default_factory=weakref.WeakKeyDictionary)
    created: int = 0

    def player_for(self, channel: LandmarkChannel) -> GhostPlayer:
        player = self.players.get(channel)
        if player is None or player._closed:
            player = GhostPlayer(ChannelHost(channel, self.daemon))
            self.players[channel] = player
            self.created += 1
            channel.channel.on("close", player.close)
        return player


#: Live feeds of running applications -> their ghost service (a channel knows its feed).
_SERVICES: weakref.WeakKeyDictionary[LandmarkFeed, _Service] = weakref.WeakKeyDictionary()
_SERVICE: web.AppKey[_Service] = web.AppKey("climbd_ghost", _Service)


def _on_ghost_message(channel: LandmarkChannel, message: dict[str, Any]) -> dict[str, Any] | None:
    """The ``LandmarkChannel.extensions["ghost"]`` handler: queue a control, or reply with an
    error. Never raises."""
    feed = channel.feed
    service = _SERVICES.get(feed) if isinstance(feed, LandmarkFeed) else None
    if service is None:  # also on the delayed view: the ghost overlays the live wall
        return {"type": "error", "code": "ghost-unavailable",
                "error": "ghost replay is not running on this daemon", "seq": None}
    return service.player_for(channel).control(message)


async def _ghost_context(app: web.Application) -> AsyncIterator[None]:
    """Bind the live feed (started by the live view just before) to this app's players."""
    from climbd.api.whep import LIVE

    service = _Service(app[DAEMON])
    app[_SERVICE] = service
    endpoint = app[LIVE].endpoint if LIVE in app else None
    feed = endpoint.feed if endpoint is not None else None
    if feed is not None:
        _SERVICES[feed] = service
    LandmarkChannel.extensions["ghost"] = _on_ghost_message
    try:
        yield
    finally:
        if feed is not None:
            _SERVICES.pop(feed, None)
        for player in list(service.players.values()):
            player.close()
            await player.wait_closed()


@operation("Ghost players (one per live viewer that uses one): state, messages, pacing",
           tags=("live",), access="wall",
           responses={200: ("Counters; late_ms = sent minus due time of ghost poses", None)})
async def ghost_stats(request: web.Request) -> web.Response:
    """``GET /api/ghost/stats``."""
    service = request.app.get(_SERVICE)
    players = [] if service is None else [p.stats() for p in service.players.values()]
    return web.json_response({"players": players,
                              "created": service.created if service else 0})


def add_routes(app: web.Application) -> None:
    """Register ``/api/ghost/stats`` and the data-channel hook (needs the live view's routes,
    :func:`climbd.api.whep.add_routes`, registered before)."""
    app.router.add_get("/api/ghost/stats", ghost_stats, allow_head=False)
    app.cleanup_ctx.append(_ghost_context)
