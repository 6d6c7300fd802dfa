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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av

from climbd.config import CaptureConfig
from climbd.errors import SourceError

__all__ = [
    "AvSource",
    "CaptureState",
    "CaptureWorker",
    "Frame",
    "FrameSource",
    "SourceKind",
    "classify_source",
    "open_source",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    Attributes:
        number: frame number from the start of capture (0, 1, 2, ...; never reused).
        timestamp: capture time on the ``time.monotonic`` clock, seconds.
        image: the decoded picture (any pixel format; the encoder converts to yuv420p).
    """

    number: int
    timestamp: float
    image: av.VideoFrame


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

    ``read`` returns the next frame, ``None`` at the end of a finite source, and raises
    :class:`~climbd.errors.SourceError` when the source fails (e.g. a camera unplugged).
    """

    description: str
    fps: float

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class AvSource:
    """A PyAV input container as a :class:`FrameSource`.

    Args:
        spec: the source string (see :func:`classify_source`).
        config: capture settings (camera size/rate/format, loop).
        first_number: number given to the first frame read.
        pace: deliver file frames at their own rate (camera-like). ``False`` reads a file
            as fast as it decodes (ingest).

    Raises:
        SourceError: the source cannot be opened or has no video stream.
    """

    def __init__(self, spec: str, config: CaptureConfig, first_number: int = 0,
                 pace: bool = True):
        self.kind = classify_source(spec)
        self.description = spec
        self._config = config
        self._pace = pace and self.kind is SourceKind.FILE
        self._loop = config.loop and self.kind is SourceKind.FILE
        self._number = first_number
        options: dict[str, str] = {}
        fmt: str | None = None
        path = spec
        if self.kind is SourceKind.DEVICE:
            fmt = "v4l2"
            path = f"/dev/video{spec}" if spec.isdigit() else spec
            options = {
                "video_size": f"{config.width}x{config.height}",
                "framerate": f"{config.fps:g}",
            }
            if config.input_format:
                options["input_format"] = config.input_format
        elif self.kind is SourceKind.URL:
            options = {"rw_timeout": str(int(config.stall_timeout_s * 1e6))}
            if spec.startswith("rtsp"):
                options["rtsp_transport"] = "tcp"
        elif not os.path.exists(spec):
            raise SourceError(f"video file not found: {spec}")
        try:
            self._container = av.open(path, format=fmt, options=options, timeout=10.0)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {spec}: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{spec} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else config.fps
        self._decoder = self._container.decode(self._stream)
        self._base: float | None = None   # monotonic time of media time 0
        self._offset = 0.0                # media-time offset added by loops
        self._last_media = 0.0

    def _next_decoded(self) -> av.VideoFrame | None:
        try:
            return next(self._decoder)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.description}: read failed: {exc}") from exc

    def read(self) -> Frame | None:
        """Return the next frame (see :class:`FrameSource`)."""
        image = self._next_decoded()
        if image is None and self._loop:
            self._offset = self._last_media + 1.0 / self.fps
            try:
                self._container.seek(0, stream=self._stream)
            except av.FFmpegError as exc:
                raise SourceError(f"{self.description}: cannot loop: {exc}") from exc
            self._decoder = self._container.decode(self._stream)
            image = self._next_decoded()
            if image is None:
                raise SourceError(f"{self.description}: no frames after looping")
        if image is None:
            return None
        if self.kind is SourceKind.FILE:
            media = (image.time or 0.0) + self._offset
            self._last_media = media
            now = time.monotonic()
            if self._base is None:
                self._base = now - media
            timestamp = self._base + media
            if self._pace and timestamp > now:
                time.sleep(timestamp - now)
        else:
            timestamp = time.monotonic()
        frame = Frame(self._number, timestamp, image)
        self._number += 1
        return frame

    def close(self) -> None:
        """Close the container (idempotent)."""
        with contextlib.suppress(av.FFmpegError):
            self._container.close()


def open_source(spec: str, config: CaptureConfig, first_number: int = 0) -> FrameSource:
    """Open ``spec`` as a paced, camera-like source.

    Raises:
        SourceError: it cannot be opened.
    """
    return AvSource(spec, config, first_number)


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
    opened or fails is retried after ``retry_initial_s``, doubling up to ``retry_max_s``; the
    error is kept in :attr:`error` for the health endpoint.

    Args:
        factory: opens a source given the next frame number; raises SourceError.
        on_frame: called with each :class:`Frame`.
        config: retry timings.
    """

    def __init__(self, factory: SourceFactory, on_frame: Callable[[Frame], None],
                 config: CaptureConfig):
        self._factory = factory
        self._on_frame = on_frame
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="climbd-capture", daemon=True)
        self.state = CaptureState.CONNECTING
        self.error: str | None = None
        self.fps = 0.0
        self.source_fps = config.fps
        self.frames = 0
        self.last_frame_at: float | None = None
        self.reconnects = 0
        self.opened = threading.Event()  # set once the source opened or first failed

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
            try:
                source = self._factory(number)
            except SourceError as exc:
                self._lost(str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, self._config.retry_max_s)
                continue
            self.source_fps = source.fps
            self.state = CaptureState.RUNNING
            self.error = None
            self.opened.set()
            log.info("capture: %s open at %.3g fps", source.description, source.fps)
            try:
                while not self._stop.is_set():
                    frame = source.read()
                    if frame is None:
                        self.state = CaptureState.ENDED
                        log.info("capture: %s ended", source.description)
                        return
                    number = frame.number + 1
                    self._count(frame)
                    delay = self._config.retry_initial_s
                    self._on_frame(frame)
            except SourceError as exc:
                self._lost(str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, self._config.retry_max_s)
            finally:
                source.close()
        self.state = CaptureState.STOPPED

    def _lost(self, message: str) -> None:
        self.state = CaptureState.LOST
        self.error = message
        self.reconnects += 1
        self.opened.set()
        log.warning("capture: %s; retrying", message)

    def _count(self, frame: Frame) -> None:
        if self.last_frame_at is not None:
            dt = frame.timestamp - self.last_frame_at
            if dt > 0:
                inst = 1.0 / dt
                self.fps = inst if self.fps == 0 else 0.9 * self.fps + 0.1 * inst
        self.last_frame_at = frame.timestamp
        self.frames += 1
