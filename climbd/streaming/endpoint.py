"""The WHEP endpoint: creates, finds, limits and ends live viewer sessions.

It owns what all viewers share: the keyframe governor (one encoder, few forced IDRs), the
RTP packetizer (one packetization per frame) and the landmark feed (one pose encode per
frame). Per viewer it only keeps a
:class:`~climbd.streaming.session.WhepSession`, removed as soon as the session closes, so
``viewers`` drops back to 0 and no subscription, task or socket outlives a viewer.

Delayed viewers (:meth:`WhepEndpoint.create` with ``delay_s``) count towards the same
``max_viewers``; viewers of the same delay share one
:class:`~climbd.streaming.delay.DelayLine`, which ends with its last viewer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from climbd.broadcast import Broadcast
from climbd.config import WebRTCConfig
from climbd.pose import Pose
from climbd.streaming.datachannel import MessageHandler
from climbd.streaming.delay import DelayLine, PacketHistory
from climbd.streaming.errors import (
    DelayOutOfRange,
    OfferError,
    UnknownViewer,
    ViewerLimitReached,
)
from climbd.streaming.feed import LandmarkFeed
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.streaming.offer import parse_offer
from climbd.streaming.profiles import offer_has_profile, profile_name
from climbd.streaming.session import WhepSession
from climbd.streaming.track import SharedPacketizer
from climbd.video import EncodedPacket

__all__ = ["LiveSource", "WhepEndpoint"]

log = logging.getLogger(__name__)


class LiveSource(Protocol):
    """What the live view needs from the daemon (``climbd.daemon.Daemon`` fits)."""

    @property
    def packets(self) -> Broadcast[EncodedPacket]: ...

    @property
    def poses(self) -> Broadcast[Pose]: ...

    def request_keyframe(self) -> None: ...


class WhepEndpoint:
    """All live viewers of one daemon.

    Args:
        source: the packet and pose broadcasts and the keyframe request.
        config: the ``[webrtc]`` settings.
        keyframe_interval_s: the encoder's GOP, seconds (lets the governor skip forcing an
            IDR when a natural one is due).
        message_limit: data-channel client messages per second and burst, per viewer.
        channel_handlers: data-channel message types handled elsewhere (``"ghost"``:
            :meth:`climbd.ghost.live.GhostService.on_message`).
        history: the daemon's packet/pose buffer (None: no delayed view).
        delay_default_s: the delay of a delayed viewer that names none, seconds
            (``live.delay_s``).

    Call :meth:`start` on the event loop before the first offer and :meth:`close` at shutdown.
    """

    def __init__(self, source: LiveSource, config: WebRTCConfig,
                 keyframe_interval_s: float = 1.0,
                 message_limit: tuple[float, float] | None = None,
                 channel_handlers: Mapping[str, MessageHandler] | None = None,
                 history: PacketHistory | None = None, delay_default_s: float = 10.0):
        self.config = config
        #: extra client message types of every live viewer's data channel (e.g. "ghost";
        #: not on the delayed view, whose timeline is not the live one)
        self.channel_handlers = dict(channel_handlers or {})
        self.history = history
        self.delay_default_s = delay_default_s
        self._gop_s = keyframe_interval_s
        self._lines: dict[float, DelayLine] = {}
        self._line_of: dict[str, DelayLine] = {}
        self._line_tasks: set[asyncio.Future[None]] = set()
        #: data-channel client messages per second and burst, per viewer (None = unlimited)
        self.message_limit = message_limit
        self._source = source
        self.keyframes = KeyframeGovernor(source.request_keyframe, gop_s=keyframe_interval_s)
        self.packetizer = SharedPacketizer()
        self.feed: LandmarkFeed | None = None
        self._sessions: dict[str, WhepSession] = {}
        self._closing = False
        self.created = 0
        self.refused = 0
        self.close_reasons: dict[str, int] = {}

    def _camera_profile(self) -> str | None:
        """The camera's ``profile-level-id`` while its H.264 is passed through, else None."""
        info = getattr(self._source, "stream_info", None)  # optional on a LiveSource
        if info is None or getattr(info, "source", "encode") != "camera":
            return None
        return str(info.profile_level_id) or None

    def start(self) -> None:
        """Start the shared landmark feed (call on the event loop)."""
        if self.feed is None:
            self.feed = LandmarkFeed(self._source.packets, self._source.poses, self.keyframes,
                                     asyncio.get_running_loop())
            self.feed.start()

    @property
    def viewers(self) -> int:
        """Live sessions that exist now (connecting or connected)."""
        return len(self._sessions)

    def get(self, session_id: str) -> WhepSession:
        """The session with this id.

        Raises:
            UnknownViewer: there is none (it ended, or never existed).
        """
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownViewer(session_id) from None

    @property
    def max_delay_s(self) -> float:
        """The longest delay a delayed viewer may ask for, seconds (the buffer length; 0 when
        there is no buffer)."""
        return self.history.keep_s if self.history is not None else 0.0

    def check_delay(self, delay_s: float | None) -> float:
        """The delay a delayed viewer gets: ``delay_s``, or the default when None.

        Raises:
            DelayOutOfRange: not within 1 s .. :attr:`max_delay_s` (or no buffer).
        """
        if self.history is None:
            raise DelayOutOfRange("the delayed view is not available (no packet buffer)")
        delay = min(self.delay_default_s, self.max_delay_s) if delay_s is None else delay_s
        if not (1.0 <= delay <= self.max_delay_s):  # also False for NaN
            raise DelayOutOfRange(f"delay_s must be between 1 and {self.max_delay_s:g} "
                                  f"seconds (recording.buffer_s), got {delay!r}")
        return delay

    async def create(self, offer_sdp: str, delay_s: float | None = None,
                     delayed: bool = False) -> tuple[WhepSession, str]:
        """Answer a viewer's offer; returns the new session and the answer SDP.

        Args:
            offer_sdp: the viewer's SDP offer.
            delayed: a delayed viewer: video and landmarks ``delay_s`` seconds late, from
                the packet buffer (:mod:`climbd.streaming.delay`).
            delay_s: its delay, seconds (None: ``delay_default_s``).

        Raises:
            DelayOutOfRange: ``delay_s`` outside 1 .. :attr:`max_delay_s`.
            ViewerLimitReached: ``max_viewers`` sessions exist (checked before any work).
            OfferError: the offer is malformed or unsatisfiable (nothing is kept).
        """
        delay = self.check_delay(delay_s) if delayed else None
        if self._closing or len(self._sessions) >= self.config.max_viewers:
            self.refused += 1
            raise ViewerLimitReached(self.config.max_viewers)
        offer = parse_offer(offer_sdp)
        profile_level_id = self._camera_profile()
        if profile_level_id and not offer_has_profile(offer.h264_profiles, profile_level_id):
            raise OfferError(
                f"the camera sends H.264 {profile_name(profile_level_id)} (profile-level-id "
                f"{profile_level_id}, passed through as it is) and this player offers only "
                f"{', '.join(offer.h264_profiles)}: set the camera to Constrained Baseline, or "
                "video.encoder = \"libx264\"", code="no-h264-profile")
        self.start()
        assert self.feed is not None
        line = self._line(delay) if delay is not None else None
        session = WhepSession(
            line.packets if line else self._source.packets,
            line if line else self.feed,
            line.keyframes if line else self.keyframes,
            line.packetizer if line else self.packetizer,
            ice_servers=self.config.ice_servers,
            host_candidates=self.config.host_candidates,
            ice_timeout_s=self.config.ice_timeout_s,
            on_closed=self._forget,
            message_limit=self.message_limit,
            channel_handlers=self.channel_handlers if line is None else {},
            profile_level_id=profile_level_id,
        )
        self._sessions[session.id] = session  # reserve the slot before the first await
        if line is not None:
            line.viewers += 1
            self._line_of[session.id] = line
        answer = await session.answer(offer)
        self.created += 1
        log.info("viewer %s: answered (%d viewer(s), data channel %s%s)", session.id[:6],
                 self.viewers, "offered" if offer.data_channels else "not offered",
                 f", delayed {delay:g} s" if delay is not None else "")
        return session, answer

    def _line(self, delay_s: float) -> DelayLine:
        """The delay line of ``delay_s`` (shared by its viewers; started if new)."""
        key = round(delay_s, 3)
        line = self._lines.get(key)
        if line is None:
            assert self.history is not None
            line = DelayLine(self.history, key, asyncio.get_running_loop(), self._gop_s)
            line.start()
            self._lines[key] = line
            log.info("delay line %g s started", key)
        return line

    def _release_line(self, session_id: str) -> None:
        line = self._line_of.pop(session_id, None)
        if line is None:
            return
        line.viewers -= 1
        if line.viewers <= 0 and self._lines.get(line.delay_s) is line:
            del self._lines[line.delay_s]
            self._line_tasks.add(asyncio.ensure_future(line.close()))
            log.info("delay line %g s ended (no viewer left)", line.delay_s)

    async def delete(self, session_id: str) -> None:
        """End a session (WHEP DELETE).

        Raises:
            UnknownViewer: no such session.
        """
        await self.get(session_id).close("deleted")

    def _forget(self, session: WhepSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._release_line(session.id)
        reason = session.close_reason or "closed"
        self.close_reasons[reason] = self.close_reasons.get(reason, 0) + 1

    async def close(self) -> None:
        """End every session and stop the feed (shutdown)."""
        self._closing = True
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.close("shutdown") for s in sessions), return_exceptions=True)
        self.keyframes.close()
        lines = list(self._lines.values())
        self._lines.clear()
        await asyncio.gather(*(line.close() for line in lines), *self._line_tasks,
                             return_exceptions=True)
        if self.feed is not None:
            await self.feed.close()
            self.feed = None

    def stats(self) -> dict[str, Any]:
        """Live-view health as a JSON-ready dict."""
        return {
            "viewers": self.viewers,
            "max_viewers": self.config.max_viewers,
            "created": self.created,
            "refused": self.refused,
            "closed": dict(self.close_reasons),
            "keyframes": self.keyframes.stats(),
            "packetizer": {"packetized": self.packetizer.packetized,
                           "reused": self.packetizer.reused},
            "feed": None if self.feed is None else self.feed.stats(),
            "delay": {"default_s": min(self.delay_default_s, self.max_delay_s),
                      "max_s": self.max_delay_s,
                      "lines": [line.stats() for line in self._lines.values()]},
            "sessions": [s.stats() for s in self._sessions.values()],
        }
