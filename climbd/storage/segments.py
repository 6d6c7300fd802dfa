"""Crash-safe video recording: fragmented MP4 while recording, a regular MP4 afterwards.

While a session records, :class:`FragmentedMp4Writer` muxes the shared H.264 packets (no
re-encode) into a fragmented MP4 (``frag_keyframe+empty_moov+default_base_moof``): an empty
``moov`` up front, then one ``moof``+``mdat`` fragment per GOP (1 s). Each fragment is handed
to the kernel (and by default fsynced) as soon as the next keyframe closes it, so a
``kill -9`` or a crash of the daemon loses at most the fragment being written.

When the session ends, :func:`finalize` remuxes the fragmented file into a regular MP4 with
``+faststart`` (``moov`` first), which a tablet's ``<video>`` can seek in with HTTP range
requests. It tolerates a truncated tail, so it also rescues the file of a killed daemon.
:func:`probe` reads a file's frame count and duration by demuxing (not decoding).

Everything here is synchronous and blocking: run it on a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fractions
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

from climbd.errors import DiskFullError, StorageError
from climbd.video import CLOCK_RATE, EncodedPacket, VideoStreamInfo

__all__ = ["FRAGMENTED_MOVFLAGS", "FragmentedMp4Writer", "VideoFileInfo", "finalize", "probe"]

log = logging.getLogger(__name__)

#: Muxer flags of the recording file: a fragment per keyframe, playable while it grows.
FRAGMENTED_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
_TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


@dataclass(frozen=True, slots=True)
class VideoFileInfo:
    """What :func:`probe` / :func:`finalize` found in a video file.

    Attributes:
        frames: video packets (= frames: H.264 without B-frames, one access unit each).
        duration_s: from the first frame's start to the last frame's end, seconds.
        width, height: frame size, pixels.
        bytes: file size, bytes.
    """

    frames: int
    duration_s: float
    width: int
    height: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _translate(exc: BaseException, action: str, path: Path) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if _is_enospc(exc):
        return DiskFullError(f"{action}: disk full writing {path}")
    return StorageError(f"{action} {path}: {exc}")


class FragmentedMp4Writer:
    """Writes one session's encoded packets to a fragmented MP4 file, crash-safe per GOP.

    Synchronous and not thread-safe: create, :meth:`write` and :meth:`close` it on one worker
    thread. The file is created (truncated if it exists) on construction; its
    header (``ftyp`` + empty ``moov``) is written with the first packet.

    Args:
        path: the ``.mp4`` file to write.
        info: parameters of the stream the packets come from. The ``avcC`` box is built from
            the SPS/PPS of the first keyframe, which must carry them in-band; when it does not,
            ``info.extradata`` (Annex-B SPS+PPS) is put in front of that keyframe.
        fsync: also ``fsync`` the file after each completed fragment, so the recording
            survives a power cut too, not only a crash of the process (one fsync per GOP).

    Attributes:
        frames: packets written so far.
        bytes_written: bytes of the file on disk so far (header and completed fragments;
            the final size after :meth:`close`).
        duration_s: media time written, seconds: the last frame's pts plus one frame.

    Raises:
        DiskFullError: no space for the file.
        StorageError: the file cannot be created or the muxer cannot start.
    """

    def __init__(self, path: str | os.PathLike[str], info: VideoStreamInfo, *,
                 fsync: bool = True):
        self.path = Path(path)
        self.info = info
        self.frames = 0
        self.duration_s = 0.0
        self._fsync = fsync
        self._frame_ticks = round(CLOCK_RATE / info.fps) if info.fps > 0 else 0
        self._last_pts = -1
        self._failed: StorageError | None = None
        self._closed = False
        self._final_size: int | None = None
        self._file: BinaryIO | None = None
        try:
            # Unbuffered: every muxer flush goes straight to the kernel.
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - kept open
            self._container: Any = av.open(
                self._file, "w", format="mp4",
                options={"movflags": FRAGMENTED_MOVFLAGS, "flush_packets": "1"},
            )
            self._stream = self._container.add_mux_stream(
                info.codec, width=info.width, height=info.height)
            self._stream.time_base = _TIME_BASE
        except (OSError, av.FFmpegError, ValueError) as exc:
            if self._file is not None:
                self._file.close()
            raise _translate(exc, "cannot create video file", self.path) from exc

    @property
    def bytes_written(self) -> int:
        """Bytes of the file on disk (header and completed fragments; final size once
        closed)."""
        if self._final_size is not None:
            return self._final_size
        assert self._file is not None
        return os.fstat(self._file.fileno()).st_size

    def write(self, packet: EncodedPacket, pts_origin: int) -> None:
        """Mux one packet with its timestamps moved by ``-pts_origin`` (90 kHz ticks).

        ``pts_origin`` is the pts of the session's first packet, so the file starts at 0.
        When ``packet`` is a keyframe, the previous GOP's fragment is written to disk (and
        fsynced) before this returns.

        Raises:
            ValueError: the first packet is not a keyframe, a rebased pts is negative or not
                increasing, or the stream parameters differ from ``info`` (a new encoder
                needs a new file).
            DiskFullError: the disk is full (the file keeps every complete fragment).
            StorageError: any other write error, or the writer already failed or is closed.
        """
        if self._closed:
            raise StorageError(f"video writer for {self.path} is closed")
        if self._failed is not None:
            raise StorageError(f"video writer for {self.path} failed earlier: {self._failed}")
        pts = packet.pts - pts_origin
        if self.frames == 0 and not packet.keyframe:
            raise ValueError("the first packet of a recording must be a keyframe")
        if pts < 0 or pts <= self._last_pts:
            raise ValueError(f"pts {pts} (after rebasing by {pts_origin}) must be >= 0 and "
                             f"greater than the previous one ({self._last_pts})")
        if packet.info != self.info:
            raise ValueError("stream parameters changed (encoder reopened): "
                             "start a new video file")
        data = packet.data
        if self.frames == 0 and self.info.extradata and self.info.extradata not in data:
            data = self.info.extradata + data
        av_packet = av.Packet(data)
        av_packet.pts = av_packet.dts = pts
        av_packet.time_base = _TIME_BASE
        av_packet.is_keyframe = packet.keyframe
        if self._frame_ticks:
            av_packet.duration = self._frame_ticks
        av_packet.stream = self._stream
        try:
            self._container.mux(av_packet)
            if packet.keyframe and self._fsync and self.frames > 0:
                assert self._file is not None
                os.fsync(self._file.fileno())
        except (OSError, av.FFmpegError) as exc:
            self._failed = _translate(exc, "cannot write video to", self.path)
            raise self._failed from exc
        self._last_pts = pts
        self.frames += 1
        self.duration_s = (pts + self._frame_ticks) / CLOCK_RATE

    def close(self) -> None:
        """Write the last fragment and the trailer, then close the file (idempotent).

        After a failed :meth:`write` the file is closed without raising again.

        Raises:
            DiskFullError, StorageError: the last fragment or trailer cannot be written (the
                file still holds every earlier fragment).
        """
        if self._closed:
            return
        self._closed = True
        error: StorageError | None = None
        try:
            self._container.close()
            if self._fsync and self._failed is None:
                assert self._file is not None
                os.fsync(self._file.fileno())
        except (OSError, av.FFmpegError) as exc:
            if self._failed is None:
                error = _translate(exc, "cannot finish video file", self.path)
            else:
                log.debug("closing failed writer %s: %s", self.path, exc)
        finally:
            assert self._file is not None
            with contextlib.suppress(OSError):
                self._final_size = os.fstat(self._file.fileno()).st_size
            with contextlib.suppress(OSError):
                self._file.close()
        if error is not None:
            raise error

    def __enter__(self) -> FragmentedMp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean_packets(container: Any, stream: Any, path: Path) -> Any:
    """Yield the demuxed packets of ``stream`` up to the first error or corrupt packet."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as exc:
            log.warning("%s: stopped reading at a damaged tail: %s", path, exc)
            return
        if packet.dts is None or packet.size == 0:  # demuxer's end-of-stream marker
            continue
        if packet.is_corrupt:
            log.warning("%s: stopped at a truncated packet (pts %s)", path, packet.pts)
            return
        yield packet


def _open_input(path: Path) -> tuple[Any, Any]:
    if not path.is_file():
        raise StorageError(f"video file {path} does not exist")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        # On a seekable file the MP4 demuxer reads every fragment header while opening, to
        # index the whole file, and gives up on a truncated one. "ignidx" makes it read
        # fragments lazily instead, so the complete ones before a damaged tail still demux.
        try:
            container = av.open(str(path), options={"fflags": "+ignidx"})
        except (av.FFmpegError, OSError):
            raise StorageError(f"cannot read video file {path}: {exc}") from exc
        log.warning("%s: damaged fragment index (%s): reading fragments one by one", path, exc)
    if not container.streams.video:
        container.close()
        raise StorageError(f"{path} has no video stream")
    return container, container.streams.video[0]


class _Span:
    """Accumulates frame count and media span of packets."""

    def __init__(self) -> None:
        self.frames = 0
        self.start: float | None = None
        self.end = 0.0

    def add(self, packet: Any) -> None:
        assert packet.time_base is not None and packet.pts is not None
        tb = packet.time_base
        start = float(packet.pts * tb)
        end = float((packet.pts + (packet.duration or 0)) * tb)
        self.start = start if self.start is None else min(self.start, start)
        self.end = max(self.end, end)
        self.frames += 1

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start is None else max(0.0, self.end - self.start)


def probe(path: str | os.PathLike[str]) -> VideoFileInfo:
    """Frame count, duration, size and file size of a video file, by demuxing its packets.

    A damaged tail (a fragmented file whose writer was killed) ends the count: the result
    describes the packets that demux cleanly.

    Raises:
        StorageError: the file is missing, is not a readable video, or has no packet.
    """
    p = Path(path)
    container, stream = _open_input(p)
    span = _Span()
    try:
        for packet in _clean_packets(container, stream, p):
            span.add(packet)
        width, height = stream.codec_context.width, stream.codec_context.height
    finally:
        container.close()
    if span.frames == 0:
        raise StorageError(f"{p} holds no readable video frame")
    return VideoFileInfo(span.frames, span.duration_s, width, height, p.stat().st_size)


def finalize(fragmented_path: str | os.PathLike[str],
             out_path: str | os.PathLike[str]) -> VideoFileInfo:
    """Remux a (fragmented) MP4 into a regular ``+faststart`` MP4, without re-encoding.

    Every packet that demuxes cleanly is copied; a truncated tail (the file of a killed
    writer) is dropped at its first damaged packet. The result is written to
    ``<out_path>.part`` and moved over ``out_path`` atomically; the input is left alone.

    Returns:
        The :func:`probe` of the new file.

    Raises:
        StorageError: the input is missing, unreadable or holds no complete frame.
        DiskFullError: no space for the output (no partial output is left behind).
    """
    src, dst = Path(fragmented_path), Path(out_path)
    tmp = dst.with_name(dst.name + ".part")
    container, stream = _open_input(src)
    copied = 0
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            out_stream = out.add_stream_from_template(stream)
            for packet in _clean_packets(container, stream, src):
                if copied == 0 and not packet.is_keyframe:
                    continue  # cannot start a file on a P-frame
                packet.stream = out_stream
                out.mux(packet)
                copied += 1
            if copied == 0:
                raise StorageError(f"{src} holds no complete video fragment")
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError | av.FFmpegError):
            raise _translate(exc, "cannot finalize video to", dst) from exc
        raise
    finally:
        container.close()
    info = probe(dst)
    log.info("finalized %s -> %s: %d frames, %.2f s, %d bytes", src, dst, info.frames,
             info.duration_s, info.bytes)
    return info
