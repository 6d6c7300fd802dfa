"""Export (a): the session's video as recorded, cut without re-encoding (stream copy).

Packets are copied as they are, so the clip has exactly the recorded frames and quality,
and costs almost no CPU. The price: a clip can only *start* at a keyframe (the encoder
makes one every ``video.keyframe_interval_s``, 1 s by default; an ingested file has its own
GOPs). :func:`plan_clip` therefore moves the start back to the keyframe at or before
``start_s`` and ends with the last frame that starts before ``end_s``; the result reports
the range actually exported.

With B-frames (ingested files), the end is the shortest prefix in decode order that holds
every frame shown before ``end_s``; it may hold a reference frame or two shown after it
(reported in ``actual_end_s``).

Session time of a packet is ``(pts - stream.start_time) * time_base``: the first frame of
the recording is at 0, as for the poses. Blocking: run in the export worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from climbd.errors import ExportError, StorageError
from climbd.export.common import (
    ExportCancelled,
    ExportResult,
    Progress,
    ShouldStop,
    atomic_output,
    is_disk_full,
    never,
)

__all__ = ["ClipPlan", "PacketInfo", "export_clip", "plan_clip", "scan_packets"]

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """Timing of one demuxed video packet, in decode order.

    Attributes:
        t: presentation time, seconds from the session start.
        end: ``t`` plus the packet's duration, seconds.
        keyframe: the packet starts a GOP (an IDR in a recording).
    """

    t: float
    end: float
    keyframe: bool


@dataclass(frozen=True, slots=True)
class ClipPlan:
    """Which packets a stream copy takes: decode-order indices ``[first, stop)``.

    Attributes:
        first, stop: packet index range in decode order (``first`` is a keyframe).
        actual_start_s, actual_end_s: the exported span, session seconds.
        frames: ``stop - first``.
    """

    first: int
    stop: int
    actual_start_s: float
    actual_end_s: float

    @property
    def frames(self) -> int:
        """Packets (= frames) in the clip."""
        return self.stop - self.first


def _open(path: Path) -> tuple[Any, Any]:
    if not path.is_file():
        raise ExportError(f"the session's video file {path.name} is missing")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        try:  # a fragmented file with a damaged tail (interrupted session)
            container = av.open(str(path), options={"fflags": "+ignidx"})
        except (av.FFmpegError, OSError):
            raise StorageError(f"cannot read video file {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise StorageError(f"{path} has no video stream")
    return container, container.streams.video[0]


def _packets(container: Any, stream: Any) -> Any:
    """Clean packets of ``stream`` in decode order (stops at a damaged tail)."""
    it = container.demux(stream)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except (av.FFmpegError, OSError):
            return  # a truncated last fragment: keep what came before
        if packet.dts is None or packet.pts is None or packet.size == 0:
            continue
        if packet.is_corrupt:
            return
        yield packet


def _origin(stream: Any) -> int:
    return int(stream.start_time) if stream.start_time is not None else 0


def scan_packets(path: str | os.PathLike[str]) -> list[PacketInfo]:
    """Timing of every clean packet of a video file, in decode order (demux only).

    Raises:
        ExportError: the file is missing. StorageError: it is not a readable video.
    """
    container, stream = _open(Path(path))
    try:
        tb = Fraction(stream.time_base)
        origin = _origin(stream)
        out = []
        for p in _packets(container, stream):
            t = float((p.pts - origin) * tb)
            out.append(PacketInfo(t, t + float((p.duration or 0) * tb), bool(p.is_keyframe)))
        return out
    finally:
        container.close()


def plan_clip(packets: list[PacketInfo], start_s: float | None,
              end_s: float | None) -> ClipPlan:
    """Choose the packets of a stream copy of ``[start_s, end_s)`` (session seconds).

    The clip starts at the last keyframe whose time is at or before ``start_s`` (the first
    keyframe when ``start_s`` is None or before it) and ends after the last packet in decode
    order that is shown before ``end_s`` (None = the end of the recording).

    Raises:
        ExportError: no keyframe, or no frame inside the range.
    """
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    if not keys:
        raise ExportError("the video has no keyframe: nothing can be copied")
    first = keys[0]
    if start_s is not None:
        for i in keys:
            if packets[i].t <= start_s + _EPS:
                first = i
    hi = float("inf") if end_s is None else end_s - _EPS
    lo = -float("inf") if start_s is None else start_s - _EPS
    shown = [i for i in range(first, len(packets)) if packets[i].t < hi]
    if not shown or not any(lo <= packets[i].t for i in shown):
        raise ExportError(f"no video frame between {start_s} s and {end_s} s")
    stop = max(shown) + 1
    chosen = packets[first:stop]
    return ClipPlan(first, stop, min(p.t for p in chosen), max(p.end for p in chosen))


def export_clip(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                start_s: float | None = None, end_s: float | None = None, *,
                progress: Progress | None = None,
                should_stop: ShouldStop = never) -> ExportResult:
    """Copy ``[start_s, end_s)`` of the video ``src`` into the MP4 ``dst`` (no re-encode).

    The output starts at 0 (timestamps rebased on the start keyframe) and has ``moov`` up
    front (``+faststart``) so a phone can play it while it downloads.

    Args:
        src: the session's video file. dst: the output ``.mp4``.
        start_s, end_s: session seconds; None = from the start / to the end.
        progress: called with ``(packets copied, packets in the clip)``.
        should_stop: polled per packet; True cancels (ExportCancelled).

    Raises:
        ExportError: missing video or empty range. ExportCancelled: cancelled.
        DiskFullError: the disk filled up (the partial file is removed).
        StorageError: the video cannot be read or the output written.
    """
    src_path, dst_path = Path(src), Path(dst)
    plan = plan_clip(scan_packets(src_path), start_s, end_s)
    container, stream = _open(src_path)
    copied = 0
    shift: int | None = None
    try:
        with atomic_output(dst_path) as part:
            try:
                with av.open(str(part), "w", format="mp4",
                             options={"movflags": "+faststart"}) as out:
                    out_stream = out.add_stream_from_template(stream)
                    for i, packet in enumerate(_packets(container, stream)):
                        if i < plan.first:
                            continue
                        if i >= plan.stop:
                            break
                        if should_stop():
                            raise ExportCancelled("export cancelled")
                        if shift is None:
                            shift = int(packet.pts)
                        packet.pts -= shift
                        packet.dts -= shift
                        packet.stream = out_stream
                        out.mux(packet)
                        copied += 1
                        if progress is not None and (copied % 25 == 0 or copied == plan.frames):
                            progress(copied, plan.frames)
            except av.FFmpegError as exc:
                if is_disk_full(exc):
                    raise
                raise StorageError(f"stream copy of {src_path.name} failed: {exc}") from exc
    finally:
        container.close()
    if copied != plan.frames:
        raise StorageError(f"copied {copied} of {plan.frames} packets from {src_path.name}")
    note = ("stream copy (no re-encoding): a clip can only start at a keyframe, so it starts "
            f"at {plan.actual_start_s:.3f} s")
    if start_s is not None and plan.actual_start_s < start_s - _EPS:
        note += f" (requested {start_s:.3f} s)"
    note += f" and ends at {plan.actual_end_s:.3f} s"
    return ExportResult(dst_path, copied, dst_path.stat().st_size, plan.actual_start_s,
                        plan.actual_end_s, plan.actual_end_s - plan.actual_start_s, note)
