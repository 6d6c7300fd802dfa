"""Export (b): an MP4 with the recorded skeleton burned in, optionally in slow motion.

Every video frame of ``[start_s, end_s)`` is decoded (frame-accurate: no keyframe cut),
the pose recorded for it is drawn with :func:`climbd.drawing.draw_skeleton` from the
*image* landmarks (normalised x, y times the frame size), and the frame is encoded again
with libx264 (yuv420p, ``+faststart``) through PyAV.

Slow motion re-times frames instead of duplicating them: a frame at session time ``t`` is
shown at ``(t - actual_start_s) / speed`` in the output, so a 0.25x export holds the same
frames as a 1x export and plays four times longer (its nominal frame rate is
``fps * speed``).

A frame gets the pose whose time is nearest to the frame's session time, if it is within
half a frame interval; frames without a pose (nobody detected) are written unchanged. Both
times count from the session's first video frame (see :mod:`climbd.recording` and
:mod:`climbd.ingest`), so the skeleton lines up with the image it was computed on.
Blocking and CPU-heavy: run in the low-priority export worker.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from climbd.drawing import DEFAULT_STYLE, SkeletonStyle, draw_skeleton
from climbd.errors import ExportError, StorageError
from climbd.export.clip import _open, scan_packets
from climbd.export.common import (
    ExportCancelled,
    ExportResult,
    Progress,
    ShouldStop,
    atomic_output,
    is_disk_full,
    never,
)
from climbd.storage.posecodec import PoseSeries

__all__ = ["OUTPUT_CLOCK", "export_overlay", "match_poses"]

#: Time base of the output stream: 90 kHz, as the live video (fine enough for any speed).
OUTPUT_CLOCK = 90_000
_EPS = 1e-6


def match_poses(frame_times: np.ndarray, pose_times: np.ndarray,
                tolerance_s: float) -> np.ndarray:
    """For each frame time, the index of the nearest pose time within ``tolerance_s``.

    Args:
        frame_times: ``(m,)`` session seconds of video frames.
        pose_times: ``(n,)`` session seconds of poses, sorted.
        tolerance_s: largest accepted distance, seconds (half a frame interval).

    Returns:
        ``(m,)`` int64 pose indices, -1 where no pose is close enough.
    """
    frame_times = np.asarray(frame_times, np.float64)
    pose_times = np.asarray(pose_times, np.float64)
    out = np.full(frame_times.shape, -1, np.int64)
    if len(pose_times) == 0 or len(frame_times) == 0:
        return out
    right = np.clip(np.searchsorted(pose_times, frame_times), 0, len(pose_times) - 1)
    left = np.clip(right - 1, 0, len(pose_times) - 1)
    d_right = np.abs(pose_times[right] - frame_times)
    d_left = np.abs(pose_times[left] - frame_times)
    best = np.where(d_left <= d_right, left, right)
    dist = np.minimum(d_left, d_right)
    ok = dist <= tolerance_s + _EPS
    out[ok] = best[ok]
    return out


def export_overlay(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   poses: PoseSeries, *, fps: float, start_s: float | None = None,
                   end_s: float | None = None, speed: float = 1.0,
                   style: SkeletonStyle = DEFAULT_STYLE, preset: str = "veryfast",
                   crf: int = 20, progress: Progress | None = None,
                   should_stop: ShouldStop = never) -> ExportResult:
    """Decode ``[start_s, end_s)`` of ``src``, draw ``poses`` on it, encode H.264 to ``dst``.

    Args:
        src: the session's video. dst: the output ``.mp4``.
        poses: the session's poses (at least those of the range), session seconds.
        fps: the session's nominal frame rate (pose matching tolerance, output rate).
        start_s, end_s: session seconds; None = from the start / to the end.
        speed: output speed, ``0 < speed <= 1`` for slow motion (1 = as recorded).
        style: skeleton colours (RGB) and sizes.
        preset, crf: libx264 settings.
        progress: ``(frames written, frames in the range)``.
        should_stop: polled per frame; True cancels (ExportCancelled).

    Raises:
        ExportError: missing video, bad speed, or no frame in the range.
        ExportCancelled: cancelled. DiskFullError: the disk filled up (partial file removed).
        StorageError: the video cannot be decoded or the output encoded.
    """
    if not (0 < speed <= 4):
        raise ExportError(f"speed must be in (0, 4], got {speed}")
    src_path, dst_path = Path(src), Path(dst)
    lo = -np.inf if start_s is None else float(start_s)
    hi = np.inf if end_s is None else float(end_s)
    packets = scan_packets(src_path)
    total = sum(1 for p in packets if lo - _EPS <= p.t < hi - _EPS)
    if total == 0:
        raise ExportError(f"no video frame between {start_s} s and {end_s} s")
    tolerance = 0.5 / fps if fps > 0 else 0.02
    container, stream = _open(src_path)
    written = 0
    first_t: float | None = None
    last_end = 0.0
    frame_dur = 1.0 / fps if fps > 0 else 0.0
    threads = _usable_cpus()
    try:
        if threads > 1:
            stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        tb = Fraction(stream.time_base)
        origin = int(stream.start_time) if stream.start_time is not None else 0
        if start_s is not None and start_s > 0:
            container.seek(origin + int(start_s / tb), stream=stream, backward=True,
                           any_frame=False)
        with atomic_output(dst_path) as part:
            try:
                with av.open(str(part), "w", format="mp4",
                             options={"movflags": "+faststart"}) as out:
                    ostream = None
                    for frame in container.decode(stream):
                        if frame.pts is None:
                            continue
                        t = float((frame.pts - origin) * tb)
                        if t < lo - _EPS:
                            continue
                        if t >= hi - _EPS or written >= total:
                            break
                        if should_stop():
                            raise ExportCancelled("export cancelled")
                        rgb = frame.to_ndarray(format="rgb24")
                        h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1  # yuv420p: even size
                        if (h, w) != rgb.shape[:2]:
                            rgb = np.ascontiguousarray(rgb[:h, :w])
                        if ostream is None:
                            first_t = t
                            rate = Fraction(fps * speed).limit_denominator(100_000) \
                                if fps > 0 else Fraction(30)
                            ostream = out.add_stream("libx264", rate=rate)
                            ostream.width, ostream.height = w, h
                            ostream.pix_fmt = "yuv420p"
                            ostream.time_base = Fraction(1, OUTPUT_CLOCK)
                            ostream.codec_context.time_base = Fraction(1, OUTPUT_CLOCK)
                            ostream.codec_context.thread_count = threads
                            ostream.options = {"preset": preset, "crf": str(crf)}
                        idx = match_poses(np.array([t]), poses.times, tolerance)[0]
                        if idx >= 0:
                            # landmarks are normalised to the full decoded frame
                            draw_skeleton(rgb, _fit(poses.image[idx], frame.width,
                                                    frame.height, w, h), style)
                        assert first_t is not None
                        out_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                        out_frame.pts = round((t - first_t) / speed * OUTPUT_CLOCK)
                        out_frame.time_base = Fraction(1, OUTPUT_CLOCK)
                        for packet in ostream.encode(out_frame):
                            out.mux(packet)
                        written += 1
                        last_end = t + frame_dur
                        if progress is not None and (written % 5 == 0 or written == total):
                            progress(written, total)
                    if ostream is None:
                        raise ExportError(f"no video frame between {start_s} s and {end_s} s")
                    for packet in ostream.encode(None):
                        out.mux(packet)
            except av.FFmpegError as exc:
                if is_disk_full(exc):
                    raise
                raise StorageError(f"burned-in export of {src_path.name} failed: {exc}") \
                    from exc
    finally:
        container.close()
    assert first_t is not None
    note = (f"skeleton burned in from the recorded image landmarks; {written} frames "
            f"re-encoded (H.264)")
    if speed != 1:
        note += f", re-timed to {speed:g}x (no frame duplicated)"
    return ExportResult(dst_path, written, dst_path.stat().st_size, first_t, last_end,
                        (last_end - first_t) / speed, note)


def _usable_cpus() -> int:
    """CPUs this process may run on (the low-priority worker is pinned to one): the
    decoder's and encoder's thread count, so one core never runs several codec threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _fit(landmarks: np.ndarray, width: int, height: int, w: int, h: int) -> np.ndarray:
    """Re-normalise landmarks from a ``width`` x ``height`` frame to its ``w`` x ``h`` crop."""
    if (w, h) == (width, height):
        return landmarks
    out = landmarks.copy()
    out[:, 0] *= width / w
    out[:, 1] *= height / h
    return out
