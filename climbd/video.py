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

__all__ = ["CLOCK_RATE", "TIME_BASE", "EncodedPacket", "VideoEncoder", "VideoStreamInfo"]

log = logging.getLogger(__name__)

#: RTP clock rate of video payloads (RFC 3551 §5): 90 kHz.
CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


@dataclass(frozen=True, slots=True)
class VideoStreamInfo:
    """Codec parameters of an encoded stream; changes only if the frame size changes.

    ``extradata`` is the Annex-B SPS+PPS the encoder exported (global header).
    """

    codec: str
    width: int
    height: int
    fps: float
    extradata: bytes


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
        self._info = VideoStreamInfo(
            codec="h264", width=width, height=height, fps=self.fps,
            extradata=bytes(ctx.extradata or b""),
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
