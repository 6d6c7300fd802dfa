"""One WHEP session: a viewer's peer connection, its video track and landmark channel.

Life cycle (draft-ietf-wish-whep-02 §4.2-4.3):

1. :meth:`WhepSession.answer` applies the offer, adds the shared-packet video track to the
   offer's video section (H.264 only), gathers every host candidate (no trickle from our
   side: the answer carries the full candidate list, §4.4.2) and returns the answer SDP.
2. The viewer connects (ICE, DTLS). If that does not happen within ``ice_timeout_s`` the
   session closes itself ("ice-timeout").
3. It ends on DELETE (:meth:`close` with "deleted"), when the connection fails or closes
   (ICE consent expiry, RFC 7675 §5.1, covers vanished peers after ~30 s), or on shutdown.
   :meth:`close` releases everything: packet and landmark subscriptions, tasks, the peer
   connection with its sockets. It runs once; the endpoint forgets the session through
   ``on_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiortc import (
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from climbd.broadcast import Broadcast
from climbd.streaming.datachannel import LABEL, LandmarkChannel, MessageHandler
from climbd.streaming.errors import CandidateError, OfferError
from climbd.streaming.feed import LandmarkSource
from climbd.streaming.ice import ice_configuration, restrict_host_candidates
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.streaming.offer import OfferSummary
from climbd.streaming.profiles import preferences
from climbd.streaming.track import EncodedVideoTrack, SharedPacketizer
from climbd.video import EncodedPacket

__all__ = ["WhepSession"]

log = logging.getLogger(__name__)


class WhepSession:
    """A viewer (see the module docstring).

    Args:
        packets: the shared packet broadcast.
        feed: the shared landmark feed (or a delay line for the delayed view).
        keyframes: the shared keyframe governor.
        packetizer: the shared RTP packetizer (None: aiortc packetizes per viewer).
        ice_servers: STUN/TURN URLs for the peer connection (may be empty).
        host_candidates: local addresses to gather on (empty = aioice's default).
        ice_timeout_s: seconds to connect before the session closes itself.
        on_closed: called once when the session has closed.
        profile_level_id: in passthrough, the camera's H.264 ``profile-level-id``: the
            answer carries that profile (:mod:`climbd.streaming.profiles`); None = our own
            constrained-baseline encode.

    Attributes:
        id: URL-safe random id (the Location path segment), 128 bits.
        etag: strong entity-tag of the ICE session (RFC 9110 §8.8.3), quoted.
        state: "new", "connecting", "connected" or "closed".
        close_reason: why it closed ("deleted", "ice-timeout", "failed", "closed",
            "shutdown", ...).
    """

    def __init__(
        self,
        packets: Broadcast[EncodedPacket],
        feed: LandmarkSource,
        keyframes: KeyframeGovernor,
        packetizer: SharedPacketizer | None = None,
        *,
        ice_servers: Sequence[str] = (),
        host_candidates: Sequence[str] = (),
        ice_timeout_s: float = 15.0,
        on_closed: Callable[[WhepSession], None] | None = None,
        message_limit: tuple[float, float] | None = None,
        channel_handlers: Mapping[str, MessageHandler] | None = None,
        profile_level_id: str | None = None,
    ):
        self._message_limit = message_limit
        #: the camera's profile-level-id in passthrough (None: our constrained baseline)
        self._profile_level_id = profile_level_id
        self._channel_handlers = channel_handlers
        self.id = secrets.token_urlsafe(16)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.state = "new"
        self.close_reason: str | None = None
        self._packets = packets
        self._feed = feed
        self._keyframes = keyframes
        self._packetizer = packetizer
        self._host_candidates = list(host_candidates)
        self._ice_timeout_s = ice_timeout_s
        self._on_closed = on_closed
        self.pc = RTCPeerConnection(ice_configuration(ice_servers))
        self.track: EncodedVideoTrack | None = None
        self.landmarks: LandmarkChannel | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._close_started = False
        self._closed = asyncio.Event()
        self._remote_ice: tuple[str | None, str | None] = (None, None)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._on_datachannel)

    # -- negotiation -----------------------------------------------------------------------
    async def answer(self, offer: OfferSummary) -> str:
        """Apply ``offer`` and return the answer SDP (all our candidates included).

        Raises:
            OfferError: aiortc rejected the offer (the session is then closed).
        """
        try:
            return await self._answer(offer)
        except OfferError:
            await self.close("bad-offer")
            raise
        except Exception as exc:
            await self.close("bad-offer")
            raise OfferError(f"the offer cannot be applied: {type(exc).__name__}: {exc}"
                             ) from None

    async def _answer(self, offer: OfferSummary) -> str:
        self.track = EncodedVideoTrack(self._packets, self._keyframes, self._packetizer)
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences(preferences(self._profile_level_id))
        self.track.attach(transceiver.sender)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        if transceiver.mid is None or transceiver.mid != offer.video_mid:
            raise OfferError("the offer's video section could not take the live track",
                             code="no-video")
        if self._host_candidates:
            restrict_host_candidates(self.pc, self._host_candidates)
        self._remote_ice = (offer.ice_ufrag, offer.ice_pwd)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.state = "connecting"
        self._watchdog = asyncio.create_task(self._watch(), name=f"live-watchdog-{self.id[:6]}")
        local = self.pc.localDescription
        assert local is not None
        return local.sdp

    async def add_candidates(self, fragment: str) -> int:
        """Apply a trickle-ICE SDP fragment (RFC 8840 §4.4; WHEP §4.4.1).

        Only candidates and ``end-of-candidates`` are used; they go to the first (bundled)
        transport. Returns the number of candidates added.

        Raises:
            CandidateError: the fragment changes ice-ufrag/ice-pwd (an ICE restart, which
                we do not support) or has an unparseable candidate line.
        """
        ufrag = pwd = None
        candidates = []
        end = False
        for raw in fragment.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if line.startswith("a=ice-ufrag:"):
                ufrag = line.split(":", 1)[1]
            elif line.startswith("a=ice-pwd:"):
                pwd = line.split(":", 1)[1]
            elif line.startswith("a=candidate:"):
                try:
                    candidates.append(candidate_from_sdp(line[len("a="):].split(":", 1)[1]))
                except Exception as exc:
                    raise CandidateError(f"bad candidate line {line[:80]!r}: {exc}") from None
            elif line == "a=end-of-candidates":
                end = True
        if (ufrag is not None and ufrag != self._remote_ice[0]) or (
                pwd is not None and pwd != self._remote_ice[1]):
            raise CandidateError("ICE restarts are not supported", code="ice-restart")
        transceivers = self.pc.getTransceivers()
        mid = transceivers[0].mid if transceivers else None
        for candidate in candidates:
            candidate.sdpMid = mid
            await self.pc.addIceCandidate(candidate)
        if end:
            await self.pc.addIceCandidate(None)
        return len(candidates)

    # -- events ----------------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != LABEL or self.landmarks is not None:
            log.info("viewer %s opened an unexpected data channel %r: closing it",
                     self.id[:6], channel.label)
            channel.close()
            return
        self.landmarks = LandmarkChannel(channel, self._feed, self._rtp_origin,
                                         message_limit=self._message_limit,
                                         handlers=self._channel_handlers)
        self.landmarks.start()

    def _rtp_origin(self) -> int | None:
        return self.track.rtp_origin if self.track is not None else None

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("viewer %s connection %s", self.id[:6], state)
        if state == "connected" and self.state == "connecting":
            self.state = "connected"
            self.connected_at = time.monotonic()
            log.info("viewer %s connected in %.2f s", self.id[:6],
                     self.connected_at - self.created)
        elif state in ("failed", "closed") and self.state != "closed":
            self._schedule_close(state)

    async def _watch(self) -> None:
        await asyncio.sleep(self._ice_timeout_s)
        if self.state == "connecting":
            log.info("viewer %s did not connect within %.0f s: dropping it", self.id[:6],
                     self._ice_timeout_s)
            self._schedule_close("ice-timeout")

    def _schedule_close(self, reason: str) -> None:
        if not self._close_started and self._close_task is None:
            self._close_task = asyncio.create_task(self.close(reason),
                                                   name=f"live-close-{self.id[:6]}")

    # -- teardown --------------------------------------------------------------------------
    async def close(self, reason: str = "closed") -> None:
        """Release everything (idempotent; a concurrent call waits for the first to finish)."""
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = True
        self.state = "closed"
        self.close_reason = reason
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if self.landmarks is not None:
            self.landmarks.close()
        if self.track is not None:
            self.track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), 10.0)
        except Exception:  # a transport that fails to stop must not keep the session
            log.exception("viewer %s: closing the peer connection failed", self.id[:6])
        if self.landmarks is not None:
            await self.landmarks.wait_closed()
        log.info("viewer %s closed (%s)", self.id[:6], reason)
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self)

    def stats(self) -> dict[str, Any]:
        """A JSON-ready summary (safe to show: no full session id)."""
        now = time.monotonic()
        t = self.track
        return {
            "id": self.id[:6],  # a prefix only: the full id lets its holder end the session
            "state": self.state,
            "age_s": round(now - self.created, 1),
            "video": None if t is None else {"frames": t.frames, "keyframes": t.keyframes,
                                             "skipped": t.skipped, "resyncs": t.resyncs,
                                             "rtp_origin_known": t.rtp_origin is not None,
                                             "shared_packetizing": t.shared_packetizing},
            "landmarks": None if self.landmarks is None else self.landmarks.stats(),
        }
