"""The single H.264 encode of the camera stream.

One :class:`VideoEncoder` turns captured frames into :class:`EncodedPacket` objects that are
published once and consumed by the recorder and by every live viewer (no per-consumer encode).

Stream shape, chosen for WebRTC and for crash-safe fMP4 recording:

- H.264 constrained baseline (``profile=baseline`` in libx264 gives Constrained Baseline,
  profile-level-id ``42e0xx``), which every browser's WebRTC stack decodes; no B-frames, so
  decode order equals presentation order (``dts == pts``).
- A keyframe (IDR) at least every ``keyframe_interval_s`` (GOP), and on request
  (:meth:`VideoEncoder.request_keyframe`, rate limited by the caller) for new viewers.
- SPS/PPS repeated in-band before every IDR (``repeat-headers=1``) so a viewer can join at
  any keyframe, *and* exported as ``extradata`` (global header) so MP4 muxers can write the
  ``avcC`` box before the first fragment.
- Timestamps on the RTP video clock (90 kHz, RFC 6184 §5.1; RFC 3551 §5), counted from the
  first encoded frame's capture time, so a packet's ``pts`` maps directly to RTP timestamps
  and to media time in recordings.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from dataclasses import dataclass
from typing import cast

import av

from climbd.config import VideoConfig

__all__ = [
    "CLOCK_RATE",
    "PASSTHROUGH_PROFILES",
    "TIME_BASE",
    "CameraPacket",
    "EncodedPacket",
    "VideoEncoder",
    "VideoStreamInfo",
    "nal_units",
    "passthrough_problem",
    "profile_level_id",
]

log = logging.getLogger(__name__)

#: RTP clock rate of video payloads (RFC 3551 §5): 90 kHz.
CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


@dataclass(frozen=True, slots=True)
class VideoStreamInfo:
    """Codec parameters of an encoded stream; changes only if the frame size changes.

    ``extradata`` is the Annex-B SPS+PPS the encoder exported (global header), or the
    camera's SPS+PPS in passthrough. ``profile_level_id`` is the SPS's profile_idc,
    constraint flags and level_idc as the 6 hex digits of the SDP ``profile-level-id``
    (RFC 6184 §8.1), e.g. ``"42c01f"`` (constrained baseline 3.1); "" when unknown.
    ``source`` is ``"encode"`` (our libx264 encode) or ``"camera"`` (stream copy);
    ``b_frames`` is True when the camera reorders frames (decode order ≠ display order).
    """

    codec: str
    width: int
    height: int
    fps: float
    extradata: bytes
    profile_level_id: str = ""
    source: str = "encode"
    b_frames: bool = False


#: H.264 profile_idc values every WebRTC browser stack decodes (Chrome, Safari, Firefox
#: with its platform decoder): Baseline/Constrained Baseline (66), Main (77), High (100).
#: High 10/4:2:2/4:4:4 (110, 122, 244) and Extended (88) are not decoded by browsers.
PASSTHROUGH_PROFILES = {66: "baseline", 77: "main", 100: "high"}
#: Highest H.264 level (level_idc, ×10) accepted for passthrough: 5.1 (4K30), well above
#: what a climbing-wall camera sends; browsers' profile-level-id handling goes to 5.2.
MAX_PASSTHROUGH_LEVEL = 51
#: Longest GOP (s) accepted for passthrough: a new viewer waits up to one GOP for video and
#: a crash loses at most one GOP (recordings are fragmented per GOP).
MAX_PASSTHROUGH_GOP_S = 2.0


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (start codes removed, ITU-T H.264 Annex B).

    Trailing zero bytes before a start code (``00 00 00 01`` vs ``00 00 01``) are dropped.
    """
    out = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        unit = data[start:end]
        if j >= 0:
            unit = unit.rstrip(b"\x00")
        if unit:
            out.append(unit)
        i = j
    return out


def profile_level_id(sps: bytes) -> str:
    """SDP ``profile-level-id`` of an SPS NAL unit (header byte first): 6 hex digits.

    The three bytes after the NAL header are profile_idc, the constraint_set flags and
    level_idc (ITU-T H.264 §7.3.2.1.1; RFC 6184 §8.1).

    Raises:
        ValueError: ``sps`` is not an SPS NAL unit (type 7) of at least 4 bytes.
    """
    if len(sps) < 4 or sps[0] & 0x1F != 7:
        raise ValueError("not an H.264 SPS NAL unit")
    return sps[1:4].hex()


def passthrough_problem(info: VideoStreamInfo, gop_s: float | None = None) -> str | None:
    """Why a camera's H.264 stream cannot go to browsers as it is, or None if it can.

    Checks the SPS profile (:data:`PASSTHROUGH_PROFILES`), the level
    (:data:`MAX_PASSTHROUGH_LEVEL`) and, when measured, the GOP length in seconds
    (:data:`MAX_PASSTHROUGH_GOP_S`).
    """
    if info.codec != "h264":
        return f"the camera sends {info.codec}, not H.264"
    if not info.profile_level_id:
        return "the camera's stream has no SPS (profile and level unknown)"
    profile = int(info.profile_level_id[0:2], 16)
    level = int(info.profile_level_id[4:6], 16)
    if profile not in PASSTHROUGH_PROFILES:
        return (f"H.264 profile_idc {profile} is not one browsers decode over WebRTC "
                "(use Baseline, Main or High)")
    if info.b_frames:
        return ("the camera sends B-frames, which WebRTC players do not reorder: turn them "
                "off in the camera (or use Baseline profile)")
    if level > MAX_PASSTHROUGH_LEVEL:
        return f"H.264 level {level / 10:g} is above {MAX_PASSTHROUGH_LEVEL / 10:g}"
    if gop_s is not None and gop_s > MAX_PASSTHROUGH_GOP_S:
        return (f"the camera sends a keyframe every {gop_s:.1f} s (more than "
                f"{MAX_PASSTHROUGH_GOP_S:g} s): set its GOP/I-frame interval to <= 1 s")
    return None


@dataclass(frozen=True, slots=True)
class CameraPacket:
    """One access unit of a camera's own H.264 stream (stream copy, not re-encoded).

    Attributes:
        data: Annex-B access unit, SPS/PPS in band before every IDR (added from the
            stream's parameter sets when the camera sends them only out of band).
        keyframe: True for an IDR access unit.
        info: parameters of the camera stream (``source="camera"``); the same object for
            every packet of one connection.
    """

    data: bytes
    keyframe: bool
    info: VideoStreamInfo


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded H.264 access unit (one frame), immutable and shared by every consumer.

    Attributes:
        data: Annex-B access unit (start codes; SPS/PPS in-band before IDRs).
        pts: presentation time in 90 kHz ticks since the encoder's first frame.
        timestamp: monotonic capture time of the frame, seconds (``time.monotonic`` clock).
        frame_number: capture frame number of the source frame.
        keyframe: True for an IDR access unit.
        info: codec parameters of the stream this packet belongs to.
    """

    data: bytes
    pts: int
    timestamp: float
    frame_number: int
    keyframe: bool
    info: VideoStreamInfo

    def to_av_packet(self) -> av.Packet:
        """A fresh :class:`av.Packet` (``time_base`` 1/90000, ``dts == pts``) for a muxer."""
        pkt = av.Packet(self.data)
        pkt.pts = pkt.dts = self.pts
        pkt.time_base = TIME_BASE
        pkt.is_keyframe = self.keyframe
        return pkt


class VideoEncoder:
    """Encodes :class:`av.VideoFrame` objects to constrained-baseline H.264.

    Not thread-safe except :meth:`request_keyframe`; run :meth:`encode` on one worker thread.
    The codec is opened on the first frame and reopened if the frame size changes.
    """

    def __init__(self, config: VideoConfig, fps: float):
        self._config = config
        #: nominal frame rate written into the stream (set from the source before opening)
        self.fps = fps
        self._ctx: av.video.codeccontext.VideoCodecContext | None = None
        self._info: VideoStreamInfo | None = None
        self._epoch: float | None = None
        self._last_pts = -1
        self._force_key = threading.Event()
        self._pending: dict[int, tuple[float, int]] = {}
        self.encode_seconds = 0.0
        self.frames = 0

    @property
    def info(self) -> VideoStreamInfo | None:
        """Parameters of the current stream, or None before the first frame."""
        return self._info

    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR (thread-safe)."""
        self._force_key.set()

    def _open(self, width: int, height: int) -> None:
        cfg = self._config
        ctx = cast(av.video.codeccontext.VideoCodecContext,
                   av.CodecContext.create(cfg.encoder, "w"))
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(self.fps).limit_denominator(1001)
        ctx.gop_size = max(1, round(cfg.keyframe_interval_s * self.fps))
        ctx.max_b_frames = 0
        ctx.bit_rate = cfg.bitrate_kbps * 1000
        ctx.flags |= av.codec.context.Flags.global_header
        options = {}
        if cfg.encoder == "libx264":
            options = {
                "profile": "baseline",
                "tune": "zerolatency",
                "x264-params": "repeat-headers=1:scenecut=0",
            }
        if cfg.preset:
            options["preset"] = cfg.preset
        options.update(cfg.options)
        ctx.options = options
        ctx.open()
        self._ctx = ctx
        extradata = bytes(ctx.extradata or b"")
        sps = [u for u in nal_units(extradata) if u[0] & 0x1F == 7]
        self._info = VideoStreamInfo(
            codec="h264", width=width, height=height, fps=self.fps, extradata=extradata,
            profile_level_id=profile_level_id(sps[0]) if sps else "",
        )
        log.info("video encoder %s opened at %dx%d, %.3g fps, GOP %d", cfg.encoder, width,
                 height, self.fps, ctx.gop_size)

    def encode(self, image: av.VideoFrame, timestamp: float, frame_number: int
               ) -> list[EncodedPacket]:
        """Encode one frame captured at ``timestamp`` (monotonic seconds).

        Returns the packets the encoder produced (zero or one with the zero-latency tuning).

        Raises:
            av.FFmpegError: the encoder failed (reported by the pipeline as a video error).
        """
        t0 = time.perf_counter()
        if self._ctx is None or (image.width, image.height) != (self._ctx.width, self._ctx.height):
            if self._ctx is not None:
                log.warning("frame size changed to %dx%d: reopening encoder",
                            image.width, image.height)
            self._open(image.width, image.height)
            self._force_key.clear()
        assert self._ctx is not None
        if self._epoch is None:
            self._epoch = timestamp
        pts = max(round((timestamp - self._epoch) * CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        frame = image if image.format.name == "yuv420p" else image.reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = TIME_BASE
        if self._force_key.is_set():
            self._force_key.clear()
            frame.pict_type = av.video.frame.PictureType.I
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        self._pending[pts] = (timestamp, frame_number)
        out = self._wrap(self._ctx.encode(frame))
        self.encode_seconds += time.perf_counter() - t0
        self.frames += 1
        return out

    def _wrap(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        assert self._info is not None
        out = []
        for p in packets:
            assert p.pts is not None
            ts, number = self._pending.pop(p.pts, (self._epoch or 0.0, -1))
            out.append(EncodedPacket(bytes(p), p.pts, ts, number, bool(p.is_keyframe),
                                     self._info))
        if len(self._pending) > 64:  # encoder dropped frames: forget the oldest
            for k in sorted(self._pending)[:-64]:
                del self._pending[k]
        return out

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder at end of stream."""
        if self._ctx is None:
            return []
        return self._wrap(self._ctx.encode(None))
