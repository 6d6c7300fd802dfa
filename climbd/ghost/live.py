"""Ghost over live: one :class:`~climbd.ghost.player.GhostPlayer` per viewer data channel.

Why the data channel (and not a WebSocket of its own): the ghost is drawn over the live
WebRTC video, frame by frame. Each ghost pose is stamped with the RTP timestamp of the live
frame captured when it falls due (``rtp = origin + (due - epoch) * 90000``), so the page
matches it to the displayed frame with ``requestVideoFrameCallback`` exactly as it matches
the live skeleton — both attempts line up on the video, whatever the network or decoder
latency. The viewer's ``landmarks`` channel already carries that clock, and the channel is
partially reliable (a late ghost pose is dropped, not queued behind newer ones).

The hook: :class:`climbd.daemon.Daemon` builds one :class:`GhostService` and hands its
:meth:`GhostService.on_message` to the WHEP endpoint as the ``"ghost"`` data-channel message
handler (:class:`climbd.streaming.datachannel.LandmarkChannel` ``handlers``). Each viewer
channel gets one player at its first ghost message, ended when the channel closes. Session
visibility: the player runs in the context of the viewer's WHEP request (aiortc's tasks
inherit it), so the catalog shows it only the sessions that viewer may see.

Lift-off: :class:`GhostService` follows the live attempt detector's events
(:attr:`climbd.attempt_service.AttemptService.events`, handed over by the daemon) in a
:class:`LiftoffLog`; every viewer's :class:`ChannelHost` answers ``liftoff_after`` from it,
and ``attempts`` from the stored analysis of the ghost session
(:func:`climbd.attempt_service.ensure_analysed`).
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from climbd.ghost.player import GhostPlayer, GhostSession
from climbd.storage.posecodec import PoseSeries
from climbd.streaming.datachannel import LandmarkChannel
from climbd.video import CLOCK_RATE

if TYPE_CHECKING:
    from climbd.attempt_service import LiveAttemptEvent
    from climbd.recording import Recorder
    from climbd.storage import Database

__all__ = ["AttemptEvents", "ChannelHost", "GhostService", "LiftoffLog"]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF


class AttemptEvents(Protocol):
    """A source of live attempt events (:class:`climbd.attempt_service.EventHub`)."""

    def subscribe(self, callback: Callable[[LiveAttemptEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns the unsubscriber."""
        ...


class LiftoffLog:
    """The capture times of the latest live lift-offs (attempt ``start`` events).

    Args:
        keep: how many lift-offs are kept (an armed player asks about the last second or so;
            a few dozen cover any delay in between).
        unavailable: why the detector sees no climber now (e.g. live pose off), or "".
    """

    def __init__(self, keep: int = 32, unavailable: Callable[[], str] = lambda: ""):
        self.times: deque[float] = deque(maxlen=keep)
        self.unavailable = unavailable

    def on_event(self, event: LiveAttemptEvent) -> None:
        """An :class:`~climbd.attempt_service.EventHub` callback: keep a start's ``t``."""
        if event.kind == "start":
            self.times.append(float(event.t))

    def after(self, clock_time: float) -> float | None:
        """The earliest kept lift-off captured at or after ``clock_time`` (monotonic s), or
        None."""
        return next((t for t in self.times if t >= clock_time), None)


class ChannelHost:
    """A :class:`climbd.ghost.player.GhostHost` over one viewer's landmark channel.

    Args:
        channel: the viewer's channel (send, RTP origin, shared feed's epoch).
        db: the session catalog. recorder: the recorder (``active_session``).
        liftoffs: the daemon's live lift-offs (None: no live attempt detector).
    """

    def __init__(self, channel: LandmarkChannel, db: Database, recorder: Recorder,
                 liftoffs: LiftoffLog | None = None):
        self.channel = channel
        self.db = db
        self.recorder = recorder
        self.liftoffs = liftoffs

    @property
    def is_open(self) -> bool:
        return self.channel.is_open

    async def session(self, session_id: int) -> GhostSession:
        rec = await self.db.get_session(session_id)
        return GhostSession(rec.id, rec.duration_s, rec.fps, rec.name,
                            rec.frames_with_pose)

    async def poses(self, session_id: int, start: float, end: float | None) -> PoseSeries:
        return await self.db.poses(session_id, start, end)

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
        return self.recorder.active_session

    async def attempts(self, session_id: int) -> list[tuple[float, float | None]]:
        from climbd.attempt_service import ensure_analysed

        return [(float(a["start_s"]), None if a["end_s"] is None else float(a["end_s"]))
                for a in await ensure_analysed(self.db, session_id)]

    def liftoff_after(self, clock_time: float) -> float | None:
        return None if self.liftoffs is None else self.liftoffs.after(clock_time)

    def liftoff_unavailable(self) -> str:
        if self.liftoffs is None:
            return "no live attempt detector runs"
        return self.liftoffs.unavailable()


class GhostService:
    """The ghost players of one daemon, one per viewer channel that asked for a ghost.

    Args:
        db: the session catalog. recorder: the recorder (for ``arm``).
        attempt_events: the live attempt detector's events (for ``arm`` at ``lift-off``);
            None: no detector, a lift-off arm is refused (``ghost-no-liftoff``).
        liftoff_unavailable: why the detector sees no climber now (e.g. live pose off), or
            "": a lift-off arm is refused while it says why.

    Call :meth:`close` at shutdown (after the HTTP server stopped, before the live view).
    """

    def __init__(self, db: Database, recorder: Recorder,
                 attempt_events: AttemptEvents | None = None,
                 liftoff_unavailable: Callable[[], str] = lambda: ""):
        self.db = db
        self.recorder = recorder
        self.liftoffs: LiftoffLog | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if attempt_events is not None:
            self.liftoffs = LiftoffLog(unavailable=liftoff_unavailable)
            self._unsubscribe = attempt_events.subscribe(self.liftoffs.on_event)
        self.players: weakref.WeakKeyDictionary[LandmarkChannel, GhostPlayer] = (
            weakref.WeakKeyDictionary())
        self.created = 0
        self._closed = False

    def player_for(self, channel: LandmarkChannel) -> GhostPlayer:
        """The channel's player (a new one at the first ghost message, ended with it)."""
        player = self.players.get(channel)
        if player is None or player._closed:
            player = GhostPlayer(ChannelHost(channel, self.db, self.recorder, self.liftoffs))
            self.players[channel] = player
            self.created += 1
            channel.channel.on("close", player.close)
        return player

    def on_message(self, channel: LandmarkChannel, message: dict[str, Any]
                   ) -> dict[str, Any] | None:
        """The ``"ghost"`` data-channel handler: queue a control, or reply with an error.
        Never raises."""
        if self._closed:
            return {"type": "error", "code": "ghost-unavailable",
                    "error": "ghost replay is not running on this daemon", "seq": None}
        return self.player_for(channel).control(message)

    def stats(self) -> dict[str, Any]:
        """``{"players": [per-player counters], "created": n}`` (``GET /api/ghost/stats``)."""
        return {"players": [p.stats() for p in self.players.values()],
                "created": self.created}

    async def close(self) -> None:
        """End every player (shutdown)."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for player in list(self.players.values()):
            player.close()
            await player.wait_closed()
