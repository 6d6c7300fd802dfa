"""H.264 profiles in SDP: answering a viewer with the profile the camera really sends.

Our own encode is Constrained Baseline, which every WebRTC stack offers. In passthrough the
packets are the camera's, so the answer must carry *its* ``profile-level-id`` (RFC 6184
§8.1; the profile part must match, RFC 6184 §8.2.2; the level may differ when the offer says
``level-asymmetry-allowed=1``, which every browser does): a Main or High profile camera is
answered with Main or High, and a viewer whose offer has no H.264 of that profile is
refused with a clear error instead of getting video it may not decode.

aiortc only knows Baseline and Constrained Baseline (``42001f``, ``42e01f``); it answers only
with profiles in its codec table (``aiortc.codecs.CODECS``) and only with codecs a
transceiver's preferences list. :func:`preferences` adds the camera's profile to that table
once (aiortc packetizes H.264 the same whatever the profile) and prefers it alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.sdp import H264Profile, parse_h264_profile_level_id

__all__ = ["offer_has_profile", "preferences", "profile_name"]


def _profile(profile_level_id: str) -> H264Profile | None:
    try:
        return parse_h264_profile_level_id(profile_level_id)[0]
    except ValueError:
        return None


def profile_name(profile_level_id: str) -> str:
    """Human name of a ``profile-level-id``, e.g. ``"High 4.0"`` (for messages)."""
    try:
        profile, level = parse_h264_profile_level_id(profile_level_id)
    except ValueError:
        return f"unknown ({profile_level_id})"
    name = profile.name.replace("PROFILE_", "").replace("_", " ").title()
    return f"{name} {int(level) / 10:g}"


def offer_has_profile(offered: Iterable[str], profile_level_id: str) -> bool:
    """True if one of the ``offered`` H.264 ``profile-level-id`` values has our profile.

    An H.264 entry without ``profile-level-id`` means Constrained Baseline 3.1 (RFC 6184
    §8.1 default, as aiortc and libwebrtc read it): pass ``"42e01f"`` for it.
    """
    ours = _profile(profile_level_id)
    return ours is not None and any(_profile(p) == ours for p in offered)


def _local_codec(profile_level_id: str) -> RTCRtpCodecParameters:
    ours = _profile(profile_level_id)
    for codec in CODECS["video"]:
        if codec.mimeType.lower() == "video/h264" and _profile(
                str(codec.parameters.get("profile-level-id", "42e01f"))) == ours:
            return codec
    used = {c.payloadType for c in CODECS["video"]}
    pt = next(p for p in range(96, 128) if p not in used)
    codec = RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=pt,
        rtcpFeedback=[RTCRtcpFeedback(type="nack"),
                      RTCRtcpFeedback(type="nack", parameter="pli"),
                      RTCRtcpFeedback(type="goog-remb")],
        parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1",
                    "profile-level-id": profile_level_id})
    CODECS["video"].append(codec)
    return codec


def preferences(profile_level_id: str | None) -> list[RTCRtpCodecCapability]:
    """Codec preferences for a viewer's transceiver.

    ``None`` (our Constrained Baseline encode): H.264 Constrained Baseline first, then
    Baseline, then RTX. A camera's ``profile-level-id``: only H.264 of that profile (added
    to aiortc's table if missing), then RTX.
    """
    caps = RTCRtpSender.getCapabilities("video").codecs
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    if profile_level_id is None or _profile(profile_level_id) is None:
        h264 = [c for c in caps if c.mimeType.lower() == "video/h264"]
        h264.sort(key=lambda c: 0 if str(c.parameters.get("profile-level-id", "")).lower()
                  .startswith("42e0") else 1)
        return h264 + rtx
    local = _local_codec(profile_level_id)
    caps = RTCRtpSender.getCapabilities("video").codecs   # now including ours
    ours = [c for c in caps if c.mimeType.lower() == "video/h264"
            and c.parameters.get("profile-level-id") == local.parameters["profile-level-id"]]
    return ours + rtx
