"""Checks on a viewer's SDP offer before any peer connection is made for it.

A WHEP player sends a JSEP initial offer (RFC 9429 §5.2.1). We answer it only if it asks for
what we send: one H.264 video stream with packetization mode 1 (RFC 6184 §6.2; aiortc's only
H.264 mode) in a video section the player wants to *receive* (``recvonly``, or ``sendrecv``
which WHEP tolerates: draft-ietf-wish-whep-02 §4.2). An ``application`` section (SCTP data
channels, RFC 8841) means the player may open the ``landmarks`` channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp

from climbd.streaming.errors import OfferError

__all__ = ["MAX_SDP_BYTES", "OfferSummary", "parse_offer"]

#: Largest offer accepted, bytes (a browser offer with audio, video and data is ~5 kB).
MAX_SDP_BYTES = 64 * 1024


@dataclass(frozen=True)
class OfferSummary:
    """What an acceptable offer asks for.

    Attributes:
        sdp: the offer text, normalised to CRLF line ends (RFC 4566 §5).
        video_mid: the ``mid`` of the video section we answer with our track.
        data_channels: True when the offer has an ``m=application`` (SCTP) section.
        candidates: number of ICE candidates already in the offer (0 = trickle to follow).
        ice_ufrag, ice_pwd: the viewer's ICE credentials (of the first media section; BUNDLE
            makes them common), to tell trickled candidates from an ICE restart.
        h264_profiles: the offered H.264 ``profile-level-id`` values (see the field).
    """

    sdp: str
    video_mid: str | None
    data_channels: bool
    candidates: int
    ice_ufrag: str
    ice_pwd: str
    #: ``profile-level-id`` of every H.264 (packetization-mode 1) format offered, in order
    #: (``42e01f``, the RFC 6184 default, where the offer gives none)
    h264_profiles: tuple[str, ...] = ()


def parse_offer(text: str) -> OfferSummary:
    """Validate an SDP offer.

    Raises:
        OfferError: ``malformed-sdp`` if it is not SDP aiortc can use (size, syntax, missing
            ICE credentials, DTLS fingerprint or setup role, no RTCP mux on RTP sections);
            ``no-video``, ``bad-direction`` or ``no-h264`` if it is well-formed but asks for
            nothing we can send.
    """
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise OfferError(f"the offer is larger than {MAX_SDP_BYTES} bytes")
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines or lines[0] != "v=0":
        raise OfferError("not an SDP offer: it must start with 'v=0' (RFC 4566 §5)")
    normalised = "\r\n".join(lines) + "\r\n"
    try:
        description = sdp.SessionDescription.parse(normalised)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise OfferError(f"the SDP offer cannot be parsed: {type(exc).__name__}: {exc}"
                         ) from None
    if not description.media:
        raise OfferError("the offer has no media sections")
    for i, media in enumerate(description.media):
        where = f"media section {i} ({media.kind})"
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise OfferError(f"{where} has no ICE ufrag/pwd (RFC 8839 §5.4)")
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError(f"{where} has no DTLS fingerprint or setup role (RFC 8122 §5)")
        if media.kind in ("audio", "video") and not media.rtcp_mux:
            raise OfferError(f"{where} does not use rtcp-mux (RFC 8858), which WebRTC requires")
    videos = [m for m in description.media if m.kind == "video"]
    if not videos:
        raise OfferError("the offer has no video section: the live view sends video only "
                         "(add a recvonly video transceiver)", code="no-video")
    video = videos[0]
    if video.direction not in ("recvonly", "sendrecv"):
        raise OfferError(f"the video section is {video.direction or 'without direction'}: a "
                         "viewer must offer recvonly (WHEP §4.2)", code="bad-direction")
    h264 = [c for c in video.rtp.codecs if c.mimeType.lower() == "video/h264"
            and str(c.parameters.get("packetization-mode", "0")) == "1"]
    if not h264:
        raise OfferError("the video section offers no H.264 with packetization-mode=1 "
                         "(RFC 6184), the only stream the live view has", code="no-h264")
    candidates = sum(len(m.ice_candidates) for m in description.media)
    first_ice = description.media[0].ice
    assert first_ice is not None  # checked above
    return OfferSummary(
        sdp=normalised,
        video_mid=video.rtp.muxId,
        data_channels=any(m.kind == "application" for m in description.media),
        candidates=candidates,
        ice_ufrag=first_ice.usernameFragment or "",
        ice_pwd=first_ice.password or "",
        h264_profiles=tuple(str(c.parameters.get("profile-level-id", "42e01f")).lower()
                            for c in h264),
    )
