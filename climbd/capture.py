"""Capture: frames from a V4L2 camera, a video file or a network stream, off the event loop.

Every source is opened through FFmpeg (PyAV): ``/dev/videoN`` or an index (``"0"``) with the
``v4l2`` demuxer, ``rtsp://``/``http(s)://`` URLs, or a file path. A :class:`Frame` carries a
frame number (counted by climbd, continuous across reconnects and loops) and a monotonic
capture timestamp (``time.monotonic`` seconds):

- camera and URL: the time the frame was read;
- file: its presentation time mapped onto the monotonic clock, and the file is *paced* like
  a camera (a frame is delivered no earlier than its timestamp), so timestamps reproduce the
  file's own timing exactly; ``loop=True`` replays it forever with continuous timestamps.

:class:`CaptureWorker` runs a source on its own thread, reports its state
(``connecting``, ``running``, ``lost``, ``ended``, ``stopped``) and reconnects with
exponential backoff while the daemon keeps serving.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av

from climbd.config import CaptureConfig
from climbd.errors import SourceError
from climbd.redaction import redact_url
from climbd.video import CameraPacket, VideoStreamInfo, nal_units, profile_level_id

__all__ = [
    "AvSource",
    "CaptureState",
    "CaptureWorker",
    "Frame",
    "FrameSource",
    "SourceKind",
    "classify_source",
    "open_source",
    "redact_url",
    "source_options",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    Attributes:
        number: frame number from the start of capture (0, 1, 2, ...; never reused).
        timestamp: capture time on the ``time.monotonic`` clock, seconds.
        image: the decoded picture (any pixel format; the encoder converts to yuv420p);
            None when a stream-copied packet could not be decoded (it is still recorded).
        packet: the camera's own H.264 access unit (stream copy), else None.
    """

    number: int
    timestamp: float
    image: av.VideoFrame | None
    packet: CameraPacket | None = None


class SourceKind(enum.Enum):
    """What a source string names."""

    DEVICE = "device"
    FILE = "file"
    URL = "url"


def classify_source(spec: str) -> SourceKind:
    """Tell a V4L2 device (``/dev/video0``, ``0``), a URL (``scheme://``) and a file apart."""
    if re.fullmatch(r"\d+", spec) or spec.startswith("/dev/"):
        return SourceKind.DEVICE
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        return SourceKind.URL
    return SourceKind.FILE


class FrameSource(Protocol):
    """What :class:`CaptureWorker` needs from a source (also the seam for fake cameras).

    ``read`` returns the next frame, ``None`` at the end of a finite source (a file played
    without ``loop``: the only source that ever *ends*), and raises
    :class:`~climbd.errors.SourceError` when the source fails (a camera unplugged, a network
    stream that closed, timed out or stalled: all "lost", and reopened).
    """

    description: str
    fps: float

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class AvSource:
    """A PyAV input container as a :class:`FrameSource`.

    Args:
        spec: the source string (see :func:`classify_source`).
        config: capture settings (camera size/rate/format, loop, URL options, timeouts).
        first_number: number given to the first frame read.
        pace: deliver file frames at their own rate (camera-like). ``False`` reads a file
            as fast as it decodes (ingest).
        copy: stream copy: when the source's video is H.264, every :class:`Frame` also
            carries the camera's own access unit (:class:`~climbd.video.CameraPacket`,
            Annex-B with SPS/PPS in band) and is decoded only for pose. Packets before the
            first keyframe of a connection are dropped (they cannot be decoded or joined).

    Timestamps: a file maps its presentation times onto the monotonic clock (paced); a
    camera or URL maps *the camera's* presentation times onto it (so a stream that arrives
    in bursts, as RTSP over TCP does, keeps its even frame spacing): at most
    :attr:`JUMP_S` later than the frame's arrival, re-anchored when it lags the arrival by
    more than :attr:`RESYNC_S`.

    Raises:
        SourceError: the source cannot be opened or has no video stream (the message has
            any credentials in the URL redacted).
    """

    #: Seconds the camera's clock may lag ours before timestamps are re-anchored.
    RESYNC_S = 1.0
    #: An arrival this much (s) earlier than the anchor predicts re-anchors at once (a burst).
    JUMP_S = 0.1
    #: Otherwise the anchor moves back by at most this (s) per frame (≤ 180 ticks at 90 kHz).
    SLEW_S = 0.002

    def __init__(self, spec: str, config: CaptureConfig, first_number: int = 0,
                 pace: bool = True, copy: bool = False):
        self.kind = classify_source(spec)
        self.description = redact_url(spec)
        self._config = config
        self._pace = pace and self.kind is SourceKind.FILE
        self._loop = config.loop and self.kind is SourceKind.FILE
        self._number = first_number
        fmt: str | None = None
        path = spec
        options = source_options(spec, config)
        if self.kind is SourceKind.DEVICE:
            fmt = "v4l2"
            path = f"/dev/video{spec}" if spec.isdigit() else spec
        elif self.kind is SourceKind.FILE and not os.path.exists(spec):
            raise SourceError(f"video file not found: {spec}")
        timeout = (config.open_timeout_s, config.stall_timeout_s)
        try:
            self._container = av.open(path, format=fmt, options=options, timeout=timeout)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.description}: {redact_url(str(exc))}"
                              ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.description} has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else config.fps
        self.codec = self._stream.codec_context.name
        self.copy = copy and self.codec == "h264"
        self._bsf: av.bitstream.BitStreamFilterContext | None = None
        if self.copy:
            # one frame out per packet in, no frame-thread delay
            self._stream.thread_type = "SLICE"
            extradata = bytes(self._stream.codec_context.extradata or b"")
            if extradata[:1] == b"\x01":  # avcC (MP4/MKV): length-prefixed NAL units
                self._bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb",
                                                                self._stream)
                extradata = b""
            self._extradata = extradata
        else:
            self._stream.thread_type = "AUTO"
        self._packets = self._container.demux(self._stream)
        self._info: VideoStreamInfo | None = None
        self._synced = False          # copy: a keyframe seen on this connection
        self._b_frames = False
        self._base: float | None = None   # monotonic time of media time 0
        self._offset = 0.0                # media-time offset added by loops
        self._last_media = 0.0
        self._last_ts = -1.0
        self._pending: list[av.VideoFrame] = []
        self._au: list[av.Packet] = []    # copy: packets of the access unit being collected

    @property
    def info(self) -> VideoStreamInfo | None:
        """Stream parameters of the camera's H.264 (copy mode, once a keyframe arrived)."""
        return self._info

    def _demux(self) -> av.Packet | None:
        try:
            return next(self._packets)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.description}: read failed: {redact_url(str(exc))}"
                              ) from None

    def _rewind(self) -> None:
        self._offset = self._last_media + 1.0 / self.fps
        try:
            self._container.seek(0, stream=self._stream)
        except av.FFmpegError as exc:
            raise SourceError(f"{self.description}: cannot loop: {exc}") from None
        self._packets = self._container.demux(self._stream)
        self._synced = False

    def read(self) -> Frame | None:
        """Return the next frame (see :class:`FrameSource`).

        Raises:
            SourceError: a read failed, timed out (``stall_timeout_s`` without data) or a
                camera/URL stream ended (a camera never ends: it was lost).
        """
        looped_empty = False
        while True:
            if self._pending:
                image = self._pending.pop(0)
                return self._frame(image, None, image.time)
            packet = self._demux()
            if packet is None and self.copy and self._au and self.kind is SourceKind.FILE:
                frame = self._copy_packet(None)  # the file's last access unit
                if frame is not None:
                    return frame
                continue
            if packet is None:
                if self._loop and not looped_empty:
                    self._flush_decoder()
                    if self._pending:
                        continue
                    self._rewind()
                    looped_empty = True
                    continue
                if self._loop:
                    raise SourceError(f"{self.description}: no frames after looping")
                if self.kind is not SourceKind.FILE:
                    raise SourceError(f"{self.description}: the stream ended (camera gone)")
                self._flush_decoder()
                if self._pending:
                    continue
                return None
            if packet.size == 0:  # the demuxer's end-of-stream packet drains the decoder
                if not self.copy:  # (copy mode decodes one frame per packet: none left)
                    self._pending.extend(self._decode(packet))
                continue
            looped_empty = False
            if self.copy:
                frame = self._copy_packet(packet)
                if frame is not None:
                    return frame
                continue
            images = self._decode(packet)
            if images:
                self._pending.extend(images[1:])
                return self._frame(images[0], None, images[0].time)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return list(self._stream.codec_context.decode(packet))
        except av.InvalidDataError as exc:  # a damaged frame: skip it, keep going
            log.debug("%s: undecodable packet skipped: %s", self.description, exc)
            return []
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.description}: decode failed: {redact_url(str(exc))}"
                              ) from None

    def _flush_decoder(self) -> None:
        with contextlib.suppress(av.FFmpegError):
            self._stream.codec_context.flush_buffers()

    def _copy_packet(self, packet: av.Packet | None) -> Frame | None:
        """Collect demuxed packets into access units; return a Frame per complete one.

        MP4/MKV (avcC) packets are whole access units. An Annex-B demuxer (RTSP, V4L2,
        raw ``.h264``) may split one frame of several slices into several packets (the
        first possibly without pts), so a packet starts a new access unit when it has an
        access unit delimiter, its first slice has ``first_mb_in_slice == 0``, or its pts
        differs (ITU-T H.264 §7.4.1.2.3); the previous unit is complete then, which costs
        passthrough one frame period of latency. ``None`` (end of a file) flushes it.
        """
        au = self._au
        if packet is None:
            self._au = []
            return self._copy_unit(au) if au else None
        if packet.dts is not None and packet.pts is not None \
                and packet.dts != packet.pts and not self._b_frames:
            self._b_frames = True  # reordered frames: info changes at the next keyframe
        if self._bsf is not None:
            return self._copy_unit([packet])
        if au and _has_slice(au) and self._starts_unit(packet, au):
            self._au = [packet]
            return self._copy_unit(au)
        au.append(packet)
        return None

    @staticmethod
    def _starts_unit(packet: av.Packet, au: list[av.Packet]) -> bool:
        au_pts = next((p.pts for p in au if p.pts is not None), None)
        if packet.pts is not None and au_pts is not None and packet.pts != au_pts:
            return True
        for unit in nal_units(bytes(packet)):
            kind = unit[0] & 0x1F
            if kind == 9:                      # access unit delimiter
                return True
            if kind in (1, 5):                 # first slice: first_mb_in_slice ue(v) == 0
                return len(unit) > 1 and bool(unit[1] & 0x80)
        return True  # parameter sets / SEI without a slice open the next access unit

    def _copy_unit(self, au: list[av.Packet]) -> Frame | None:
        first = next((p for p in au if p.pts is not None), au[0])
        media = float(first.pts * first.time_base) if (
            first.pts is not None and first.time_base is not None) else None
        raw = b"".join(bytes(p) for p in au)
        pts, time_base = first.pts, first.time_base
        if self._bsf is not None:  # (the filter takes the packets' data: read it first)
            data = b"".join(bytes(u) for p in au for u in self._bsf.filter(p))
        else:
            data = raw
        nals = nal_units(data)
        keyframe = any(u[0] & 0x1F == 5 for u in nals)
        if keyframe:
            sps = [u for u in nals if u[0] & 0x1F == 7]
            pps = [u for u in nals if u[0] & 0x1F == 8]
            if not sps and self._extradata:  # parameter sets only out of band (SDP)
                data = self._extradata + data
                params = nal_units(self._extradata)
                sps = [u for u in params if u[0] & 0x1F == 7]
                pps = [u for u in params if u[0] & 0x1F == 8]
            if sps:
                self._update_info(sps[0], pps[0] if pps else b"")
            self._synced = self._info is not None
        if not self._synced:
            return None  # joining mid-GOP: wait for the first keyframe
        unit = av.Packet(raw)
        unit.pts = unit.dts = pts
        if time_base is not None:
            unit.time_base = time_base
        images = self._decode(unit)
        assert self._info is not None
        return self._frame(images[-1] if images else None,
                           CameraPacket(data, keyframe, self._info), media)

    def _update_info(self, sps: bytes, pps: bytes) -> None:
        ctx = self._stream.codec_context
        extradata = b"\x00\x00\x00\x01" + sps + (b"\x00\x00\x00\x01" + pps if pps else b"")
        info = VideoStreamInfo(
            codec="h264", width=ctx.width, height=ctx.height, fps=self.fps,
            extradata=extradata, profile_level_id=profile_level_id(sps), source="camera",
            b_frames=self._b_frames or bool(ctx.has_b_frames))
        if info != self._info:
            self._info = info

    def _frame(self, image: av.VideoFrame | None, packet: CameraPacket | None,
               media_time: float | None) -> Frame:
        now = time.monotonic()
        if self.kind is SourceKind.FILE:
            media = (media_time or 0.0) + self._offset
            self._last_media = media
            if self._base is None:
                self._base = now - media
            timestamp = self._base + media
            if self._pace and timestamp > now:
                time.sleep(timestamp - now)
        elif media_time is None:
            timestamp = now
        else:
            # capture time = base + media time, at most JUMP_S later than the frame's
            # arrival: base follows the earliest "arrival - media time" seen (a start-up
            # backlog or burst pulls it back at once, a slightly faster arrival by SLEW_S a
            # frame so frame spacing stays even), and moves forward only when we lag by more
            # than RESYNC_S (a camera clock slower than ours, or a jump in its timestamps)
            candidate = now - media_time
            if self._base is None or candidate - self._base > self.RESYNC_S \
                    or self._base - candidate > self.JUMP_S:
                self._base = candidate
            elif candidate < self._base:  # a faster arrival: slew back, ≤ SLEW_S a frame
                self._base = max(candidate, self._base - self.SLEW_S)
            timestamp = self._base + media_time
        timestamp = max(timestamp, self._last_ts + 1e-6)
        self._last_ts = timestamp
        frame = Frame(self._number, timestamp, image, packet)
        self._number += 1
        return frame

    def close(self) -> None:
        """Close the container (idempotent)."""
        with contextlib.suppress(av.FFmpegError):
            self._container.close()


def _has_slice(au: list[av.Packet]) -> bool:
    """True if the packets hold a coded slice (NAL type 1 or 5)."""
    return any(u[0] & 0x1F in (1, 5) for p in au for u in nal_units(bytes(p)))


def source_options(spec: str, config: CaptureConfig) -> dict[str, str]:
    """The FFmpeg input options used to open ``spec`` (``config.options`` last, winning).

    - V4L2: ``video_size``, ``framerate`` and ``input_format`` (e.g. ``h264`` for a UVC
      camera with an H.264 encoder, ``mjpeg``) from the capture config;
    - RTSP: ``rtsp_transport`` (``capture.rtsp_transport``) and ``timeout`` (socket I/O
      timeout in µs = ``stall_timeout_s``; FFmpeg ≥ 5 name);
    - other URLs (HTTP/MJPEG, HLS): ``rw_timeout`` (µs) = ``stall_timeout_s``.

    PyAV's own open/read timeouts (``open_timeout_s``, ``stall_timeout_s``) apply to every
    source on top of these.
    """
    kind = classify_source(spec)
    options: dict[str, str] = {}
    micro = str(int(config.stall_timeout_s * 1e6))
    if kind is SourceKind.DEVICE:
        options = {"video_size": f"{config.width}x{config.height}",
                   "framerate": f"{config.fps:g}"}
        if config.input_format:
            options["input_format"] = config.input_format
    elif kind is SourceKind.URL:
        if spec.lower().startswith(("rtsp://", "rtsps://")):
            if config.rtsp_transport:
                options["rtsp_transport"] = config.rtsp_transport
            options["timeout"] = micro
        else:
            options["rw_timeout"] = micro
    options.update(config.options)
    return options


def open_source(spec: str, config: CaptureConfig, first_number: int = 0,
                copy: bool = False) -> FrameSource:
    """Open ``spec`` as a paced, camera-like source (``copy``: see :class:`AvSource`).

    Raises:
        SourceError: it cannot be opened.
    """
    return AvSource(spec, config, first_number, copy=copy)


class CaptureState(str, enum.Enum):
    """Health of the capture stage."""

    CONNECTING = "connecting"
    RUNNING = "running"
    LOST = "lost"
    ENDED = "ended"
    STOPPED = "stopped"


SourceFactory = Callable[[int], FrameSource]


class CaptureWorker:
    """Runs a source on a worker thread, delivering frames to ``on_frame`` on that thread.

    ``on_frame`` must be quick (hand the frame off; never block). A source that cannot be
    opened or fails — for a camera or network stream that includes the stream ending, read
    errors, timeouts and stalls — is *lost*: it is retried after ``retry_initial_s``,
    doubling up to ``retry_max_s``, forever (a camera never "ends"; only a file without
    ``loop`` does). The last error (credentials redacted) stays in :attr:`error` for the
    health endpoint until frames flow again.

    Args:
        factory: opens a source given the next frame number; raises SourceError.
        on_frame: called with each :class:`Frame`.
        config: retry timings.

    Attributes:
        fps: frames per second over the last :attr:`FPS_WINDOW_S` seconds of capture
            timestamps (0 when no frame came in that window).
        reconnects: times the source was lost (open failures included).
        retry_at: monotonic time of the next reconnect attempt while lost, else None.
    """

    #: Seconds of capture timestamps the :attr:`fps` figure is computed over.
    FPS_WINDOW_S = 2.0

    def __init__(self, factory: SourceFactory, on_frame: Callable[[Frame], None],
                 config: CaptureConfig):
        self._factory = factory
        self._on_frame = on_frame
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="climbd-capture", daemon=True)
        self.state = CaptureState.CONNECTING
        self.error: str | None = None
        self.source_fps = config.fps
        self.frames = 0
        self.last_frame_at: float | None = None
        self.reconnects = 0
        self.retry_at: float | None = None
        self.lost_since: float | None = None
        self.source: FrameSource | None = None
        self._times: deque[float] = deque()
        self._times_lock = threading.Lock()
        self.opened = threading.Event()  # set once the source opened or first failed

    @property
    def fps(self) -> float:
        """Frames per second over the last :attr:`FPS_WINDOW_S` s of capture timestamps."""
        with self._times_lock:
            times = list(self._times)
        if len(times) < 2:
            return 0.0
        now = time.monotonic()
        if now - times[-1] > self.FPS_WINDOW_S:  # nothing recent: the camera is gone
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def start(self) -> None:
        """Start the capture thread."""
        self._thread.start()

    def is_alive(self) -> bool:
        """True while the capture thread runs (reading or waiting to reconnect)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it (a capture that
        never started, as in safe mode, just stops)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self._config.retry_initial_s
        number = 0
        while not self._stop.is_set():
            self.state = CaptureState.CONNECTING
            self.retry_at = None
            try:
                source = self._factory(number)
            except Exception as exc:  # SourceError, or anything unexpected: keep retrying
                self._lost(exc)
                self._wait_retry(delay)
                delay = min(delay * 2, self._config.retry_max_s)
                continue
            self.source = source
            self.source_fps = source.fps
            self.opened.set()
            log.info("capture: %s open at %.3g fps", redact_url(source.description), source.fps)
            try:
                while not self._stop.is_set():
                    frame = source.read()
                    if frame is None:
                        self.state = CaptureState.ENDED
                        log.info("capture: %s ended", redact_url(source.description))
                        return
                    number = frame.number + 1
                    if self.state is not CaptureState.RUNNING:
                        self._running()
                    self._count(frame)
                    delay = self._config.retry_initial_s
                    self._on_frame(frame)
            except Exception as exc:  # SourceError, or a bug in a source: the camera is lost
                self._lost(exc)
                self._wait_retry(delay)
                delay = min(delay * 2, self._config.retry_max_s)
            finally:
                source.close()
        self.state = CaptureState.STOPPED

    def _running(self) -> None:
        if self.lost_since is not None:
            log.info("capture: camera back after %.1f s", time.monotonic() - self.lost_since)
        self.state = CaptureState.RUNNING
        self.error = None
        self.lost_since = None
        with self._times_lock:
            self._times.clear()  # fps of the new connection only

    def _wait_retry(self, delay: float) -> None:
        self.retry_at = time.monotonic() + delay
        self._stop.wait(delay)

    def _lost(self, exc: Exception) -> None:
        message = redact_url(str(exc)) if isinstance(exc, SourceError) else \
            redact_url(f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, SourceError):
            log.error("capture: unexpected error from the source", exc_info=exc)
        self.state = CaptureState.LOST
        self.error = message
        self.reconnects += 1
        if self.lost_since is None:
            self.lost_since = time.monotonic()
        self.opened.set()
        log.warning("capture: %s; retrying", message)

    def _count(self, frame: Frame) -> None:
        with self._times_lock:
            self._times.append(frame.timestamp)
            while len(self._times) > 2 and self._times[0] < frame.timestamp - self.FPS_WINDOW_S:
                self._times.popleft()
        self.last_frame_at = frame.timestamp
        self.frames += 1
