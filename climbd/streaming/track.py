"""The video ``MediaStreamTrack`` of one viewer: the shared H.264 packets, never re-encoded.

aiortc's ``RTCRtpSender`` calls ``track.recv()``; when that returns an :class:`av.Packet`
instead of a frame, it only packetizes it (``H264Encoder.pack``: Annex-B split into NAL
units, STAP-A/FU-A per RFC 6184 §5.7/§5.8) and stamps it with
``rtp = (timestamp_origin + pts) mod 2**32``. So a viewer costs packetizing and SRTP, not an
encode, and every viewer and the recorder share one encode.

The packetization itself is shared too: :class:`SharedPacketizer` cuts each access unit
into RTP payloads once (aiortc's own ``H264Encoder`` packetizer), and every sender gets the
same payload list through a stand-in for its encoder (``RTCRtpSender.__encoder``, which
aiortc creates lazily and only calls ``pack`` on). Should a future aiortc no longer have
that attribute, the track falls back to handing out ``av.Packet`` objects (one packetization
per viewer).

A viewer starts at a keyframe: the track subscribes to the packets only when the sender first
asks for one (after ICE and DTLS, so no backlog builds up while connecting), requests an IDR
and drops packets until it arrives. It resynchronises the same way if it ever falls so far
behind that its queue overflows. RTCP PLI and
FIR from the browser (RFC 4585 §6.3.1, RFC 5104 §4.3.1) become rate-limited keyframe
requests (:class:`~climbd.streaming.keyframes.KeyframeGovernor`) instead of aiortc's
per-sender encoder flag, which pre-encoded packets ignore.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError

from climbd.broadcast import Broadcast, Subscription
from climbd.streaming.keyframes import KeyframeGovernor
from climbd.video import EncodedPacket

__all__ = ["EncodedVideoTrack", "SharedPacketizer"]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF
#: Packets a viewer may lag behind the encoder before it resynchronises (≈3 s at 30 fps).
QUEUE_PACKETS = 90

#: Name of the sender's lazily created encoder attribute (name-mangled ``__encoder``).
_SENDER_ENCODER = "_RTCRtpSender__encoder"


class SharedPacketizer:
    """RTP payloads of each access unit, computed once for every viewer.

    Payloads are single NAL units, STAP-A aggregates and FU-A fragments (RFC 6184 §5.6-5.8)
    of at most aiortc's ``PACKET_MAX`` (1300) bytes, exactly what ``H264Encoder.pack`` makes.

    Args:
        memory: access units remembered (viewers are at most a few frames apart).
    """

    def __init__(self, memory: int = 64):
        self._memory = memory
        self._cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self.packetized = 0
        self.reused = 0

    def payloads(self, packet: EncodedPacket) -> list[bytes]:
        """The RTP payloads of ``packet`` (cached by its pts)."""
        cached = self._cache.get(packet.pts)
        if cached is not None:
            self.reused += 1
            return cached
        payloads = H264Encoder._packetize(H264Encoder._split_bitstream(packet.data))
        self.packetized += 1
        self._cache[packet.pts] = payloads
        if len(self._cache) > self._memory:
            self._cache.popitem(last=False)
        return payloads


class _AccessUnit:
    """What ``recv`` hands a sender whose encoder is a :class:`_Prepacketized`."""

    __slots__ = ("payloads", "pts")

    def __init__(self, payloads: list[bytes], pts: int):
        self.payloads = payloads
        self.pts = pts


class _Prepacketized:
    """Stands in for the sender's ``H264Encoder``: returns the shared payloads as they are."""

    def pack(self, unit: _AccessUnit) -> tuple[list[bytes], int]:
        return unit.payloads, unit.pts


class EncodedVideoTrack(MediaStreamTrack):
    """A video track that hands the shared encoder's packets to one ``RTCRtpSender``.

    Args:
        packets: the daemon's packet broadcast (subscribed on the first :meth:`recv`,
            released by :meth:`stop`).
        keyframes: where keyframe wishes go.
        packetizer: the shared packetizer (None: aiortc packetizes for this viewer alone).
        on_rtp_origin: called once with this sender's RTP timestamp origin when known.

    Attributes:
        rtp_origin: the sender's random RTP timestamp origin (u32) once the first packet has
            been sent, else None. aiortc keeps it in a local variable of
            ``RTCRtpSender._run_rtp``; it is learnt from the sender's last RTP timestamp
            (``RTCRtpSender.__rtp_timestamp``, kept for RTCP sender reports) minus the pts of
            the packet that was sent, which is exact because ``recv`` is only called again
            once every RTP packet of the previous frame has gone out.
        frames, keyframes: packets handed to the sender.
        skipped: packets dropped while waiting for a keyframe.
    """

    kind = "video"

    def __init__(
        self,
        packets: Broadcast[EncodedPacket],
        keyframes: KeyframeGovernor,
        packetizer: SharedPacketizer | None = None,
        on_rtp_origin: Callable[[int], None] | None = None,
    ):
        super().__init__()
        self._packets = packets
        self._packetizer = packetizer
        self.shared_packetizing = False
        self._sub: Subscription[EncodedPacket] | None = None
        self._keyframes = keyframes
        self._on_rtp_origin = on_rtp_origin
        self._synced = False
        self._requested = False
        self._seen_dropped = 0
        self._last_pts: int | None = None
        self.sender: RTCRtpSender | None = None
        self.rtp_origin: int | None = None
        self.frames = 0
        self.keyframes = 0
        self.skipped = 0
        self.resyncs = 0

    def attach(self, sender: RTCRtpSender) -> None:
        """Bind to the sender that sends this track and route its PLI/FIR to the governor.

        aiortc's ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for PLI
        and FIR; the instance attribute set here shadows that method for this sender only.
        """
        self.sender = sender
        sender._send_keyframe = self._on_picture_loss  # type: ignore[method-assign]
        if self._packetizer is not None and _SENDER_ENCODER in vars(sender):
            setattr(sender, _SENDER_ENCODER, _Prepacketized())
            self.shared_packetizing = True

    def _on_picture_loss(self) -> None:
        self._keyframes.request("pli")

    def _learn_rtp_origin(self) -> None:
        if self.rtp_origin is not None or self._last_pts is None or self.sender is None:
            return
        sent = getattr(self.sender, "_RTCRtpSender__packet_count", 0)
        last_rtp = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", None)
        if not sent or last_rtp is None:
            return
        self.rtp_origin = (last_rtp - self._last_pts) & _U32
        if self._on_rtp_origin is not None:
            self._on_rtp_origin(self.rtp_origin)

    async def recv(self) -> av.Packet | _AccessUnit:  # type: ignore[override]
        """The next access unit for the sender (waits for the encoder).

        Raises:
            MediaStreamError: the track was stopped or the packet stream ended.
        """
        self._learn_rtp_origin()
        if self._sub is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._sub = self._packets.subscribe(maxsize=QUEUE_PACKETS, policy="latest")
        sub = self._sub
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                packet = await sub.get()
            except EOFError:
                self.stop()
                raise MediaStreamError from None
            if sub.dropped != self._seen_dropped:
                # the viewer fell behind and lost packets: decode is broken until an IDR
                self._seen_dropped = sub.dropped
                self._synced = False
                self._requested = False
                self.resyncs += 1
            if not self._synced:
                if not packet.keyframe:
                    self.skipped += 1
                    if not self._requested:
                        self._requested = True
                        self._keyframes.request("join" if self.frames == 0 else "resync")
                    continue
                self._synced = True
            self.frames += 1
            self.keyframes += packet.keyframe
            self._last_pts = packet.pts
            if self.shared_packetizing and self._packetizer is not None:
                return _AccessUnit(self._packetizer.payloads(packet), packet.pts)
            return packet.to_av_packet()

    def stop(self) -> None:
        """End the track and release its packet subscription (idempotent)."""
        super().stop()
        if self._sub is not None:
            self._sub.close()
