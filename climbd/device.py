"""Device profiles: which H.264 encoder and how many pose trackers this box should use.

- :func:`auto_encoder`: ``video.encoder = "auto"`` for a stream that is encoded here (a file,
  an MJPEG/raw camera, a camera whose H.264 cannot be passed through). The hardware encoders
  of :data:`HW_ENCODERS` are tried in order — each by opening it at the asked size through
  :class:`climbd.video.VideoEncoder` (the same options the pipeline uses) and encoding a few
  frames, which must give an H.264 keyframe with its SPS — once per process and size; the
  first that works is used, else ``libx264`` (with a log line saying why).
- :func:`auto_workers`: ``pose.workers = "auto"``: the CPUs this process may run on (its
  affinity, so ``taskset`` counts), one tracker each up to two CPUs, then one CPU is left for
  capture, the encode and the event loop, at most 4 trackers.

The table of what to expect on a Pi 4, Pi 5, Jetson and x86 is in docs/DEVICES.md;
``climbd probe`` (:func:`probe`) measures this box.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Any

__all__ = ["FALLBACK_ENCODER", "HW_ENCODERS", "auto_encoder", "auto_workers", "cpu_count",
           "encoder_works", "format_probe", "probe", "resolve_encoder", "resolve_workers"]

log = logging.getLogger(__name__)

#: Hardware H.264 encoders, in the order they are tried: Raspberry Pi 4 (V4L2 M2M: the
#: BCM2711's encoder block; the Pi 5 has none), Jetson with the jetson-ffmpeg build (the
#: Orin Nano has no encoder block), NVIDIA and Intel desktop GPUs.
HW_ENCODERS: tuple[str, ...] = ("h264_v4l2m2m", "h264_nvmpi", "h264_nvenc", "h264_qsv")
#: The software encoder every box has.
FALLBACK_ENCODER = "libx264"
#: A hardware encoder that has not produced its first packet by then does not work (s).
PROBE_TIMEOUT_S = 5.0


def cpu_count() -> int:
    """CPUs this process may run on (``sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(cpus: int | None = None) -> int:
    """Pose trackers for ``cpus`` CPUs (default: this process's): 1 -> 1, 2 -> 2, then
    ``cpus - 1`` up to 4. BlazePose Full takes ~37-41 ms a frame on one x86 core here and
    ~160 ms on a Pi 5 core (public reports of ~6 fps per tracker), so a 25-30 fps camera
    needs two trackers on x86 and cannot be covered on a Pi: the rest is backfilled."""
    n = cpu_count() if cpus is None else max(1, cpus)
    return n if n <= 2 else min(4, n - 1)


def encoder_works(name: str, width: int = 1280, height: int = 720, fps: float = 30.0,
                  timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why encoder ``name`` does not work here at ``width`` x ``height`` (None if it does).

    Opens it like the pipeline does and encodes up to 10 grey frames; the result must
    start with an H.264 IDR. Runs on a helper thread so a wedged driver cannot hang the
    caller for longer than ``timeout_s``.
    """
    from climbd.config import VideoConfig

    result: list[str | None] = []

    def attempt() -> None:
        import av
        import numpy as np

        from climbd.video import VideoEncoder

        try:
            enc = VideoEncoder(VideoConfig(encoder=name, preset=""), fps)
            img = np.full((height, width, 3), 128, np.uint8)
            got = []
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                got += enc.encode(frame, i / fps, i)
                if got:
                    break
            if not got:
                result.append("no packet after 10 frames")
            elif not got[0].keyframe:
                result.append("the first packet is not a keyframe")
            else:
                result.append(None)
        except Exception as exc:  # unknown codec, no device, driver error
            result.append(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=attempt, name=f"probe-{name}", daemon=True)
    t.start()
    t.join(timeout_s)
    if not result:
        return f"no answer within {timeout_s:g} s"
    return result[0]


@functools.lru_cache(maxsize=8)
def auto_encoder(width: int = 1280, height: int = 720, fps: float = 30.0) -> str:
    """The encoder ``video.encoder = "auto"`` uses here (probed once per process and size).

    Returns the first working :data:`HW_ENCODERS` entry, else :data:`FALLBACK_ENCODER`.
    """
    tried: list[str] = []
    for name in HW_ENCODERS:
        why = encoder_works(name, width, height, fps)
        if why is None:
            log.info("video.encoder auto: hardware encoder %s works at %dx%d", name, width,
                     height)
            return name
        tried.append(f"{name} ({why})")
    log.info("video.encoder auto: no hardware H.264 encoder works here, using %s; tried %s",
             FALLBACK_ENCODER, "; ".join(tried))
    return FALLBACK_ENCODER


def resolve_workers(workers: int | str) -> int:
    """``pose.workers`` as a number ("auto" -> :func:`auto_workers`)."""
    return auto_workers() if workers == "auto" else int(workers)


def resolve_encoder(encoder: str, width: int = 1280, height: int = 720,
                    fps: float = 30.0) -> str:
    """The encoder to open for ``video.encoder``: "auto" and "copy" (when the pipeline
    must encode after all) -> :func:`auto_encoder` / libx264; any other name as it is."""
    if encoder == "auto":
        return auto_encoder(width, height, fps)
    if encoder == "copy":
        return FALLBACK_ENCODER
    return encoder


def probe(config: Any, clip: str | None = None, frames: int = 60) -> dict[str, Any]:
    """Measure this box at the configured size: decode, encode and pose, ms per frame.

    Args:
        config: a :class:`climbd.config.Config` (``capture.width/height/fps``,
            ``video.encoder``, ``pose``).
        clip: a video file to decode (default ``capture.source`` when it is a file; without
            one, grey frames are encoded and given to pose, which then runs its person
            detector on every frame: an upper bound of the tracking cost).
        frames: frames per measurement.

    Returns:
        ``{"cpus", "size", "fps", "encoder", "encoder_probe", "decode_ms", "encode_ms",
        "pose_ms", "pose_workers", "pose_person_found", "sustain": {...}}``; ``sustain``
        says whether video keeps up (decode + encode on one core under the frame interval),
        the live pose fps and coverage with the workers, and the backfill rate.

    Raises:
        SourceError: ``clip`` cannot be read. PoseError: the pose model cannot load.
    """
    import av
    import numpy as np

    from climbd.errors import SourceError
    from climbd.pose import PoseEstimator
    from climbd.video import VideoEncoder

    w, h, fps = config.capture.width, config.capture.height, float(config.capture.fps)
    source = clip
    if source is None and os.path.isfile(str(config.capture.source)):
        source = str(config.capture.source)
    decoded: list[Any] = []
    decode_ms = None
    if source is not None:
        try:
            with av.open(source) as c:
                stream = c.streams.video[0]
                t0 = time.perf_counter()
                for f in c.decode(stream):
                    decoded.append(f)
                    if len(decoded) >= frames:
                        break
                decode_ms = (time.perf_counter() - t0) * 1000 / max(1, len(decoded))
        except (av.FFmpegError, OSError, IndexError) as exc:
            raise SourceError(f"cannot decode {source}: {exc}") from exc
    if decoded:  # letterboxed into the configured size (aspect kept, as a camera frames it)
        images = [_letterbox(f, w, h) for f in decoded]
    else:
        images = [np.full((h, w, 3), 128, np.uint8)]
    encoder = resolve_encoder(config.video.encoder, w, h, fps)
    enc = VideoEncoder(config.video.model_copy(update={"encoder": encoder}), fps)
    vframes = [av.VideoFrame.from_ndarray(images[i % len(images)], format="rgb24")
               for i in range(frames)]
    enc.encode(vframes[0], 0.0, 0)  # opens the codec (not timed)
    t0 = time.perf_counter()
    for i in range(1, frames):
        enc.encode(vframes[i], i / fps, i)
    encode_ms = (time.perf_counter() - t0) * 1000 / max(1, frames - 1)
    found = 0
    with PoseEstimator(config.pose) as est:
        est.process(images[0], 0)  # model warm-up (not timed)
        t0 = time.perf_counter()
        for i in range(1, frames):
            found += est.process(images[i % len(images)], i).detected
        pose_ms = (time.perf_counter() - t0) * 1000 / max(1, frames - 1)
    workers = resolve_workers(config.pose.workers)
    interval_ms = 1000.0 / fps
    video_ms = (decode_ms or 0.0) + encode_ms
    tracker_fps = 1000.0 / pose_ms if pose_ms > 0 else float("inf")
    cpus = cpu_count()
    # live pose: one tracker per worker, on the CPUs left after the video path
    spare = max(0.0, cpus - video_ms / interval_ms)
    live_fps = min(fps, tracker_fps * min(workers, spare))
    return {
        "cpus": cpus, "size": [w, h], "fps": fps, "encoder": encoder,
        "source": source or "grey frames (no person: the detector runs every frame)",
        "decode_ms": None if decode_ms is None else round(decode_ms, 2),
        "encode_ms": round(encode_ms, 2), "pose_ms": round(pose_ms, 2),
        "pose_workers": workers, "pose_person_found": round(found / max(1, frames - 1), 3),
        "sustain": {
            "video": video_ms < interval_ms,
            "video_core_share": round(video_ms / interval_ms, 3),
            "live_pose_fps": round(live_fps, 1),
            "live_pose_coverage": round(min(1.0, live_fps / fps), 3),
            "backfill_fps_one_core": round(tracker_fps, 1),
            "backfill_s_per_recorded_min": round(60 * fps / tracker_fps, 1)
            if live_fps < fps else 0.0,
        },
    }


def _letterbox(frame: Any, w: int, h: int) -> Any:
    import numpy as np

    k = min(w / frame.width, h / frame.height)
    sw, sh = max(2, round(frame.width * k)) // 2 * 2, max(2, round(frame.height * k)) // 2 * 2
    small = frame.reformat(width=min(w, sw), height=min(h, sh), format="rgb24").to_ndarray()
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def format_probe(r: dict[str, Any]) -> str:
    """:func:`probe`'s result as text for a terminal."""
    s = r["sustain"]
    lines = [
        f"climbd probe: {r['cpus']} CPU(s), {r['size'][0]}x{r['size'][1]} at {r['fps']:g} fps",
        f"  source      {r['source']}",
        f"  decode      {r['decode_ms'] if r['decode_ms'] is not None else '-'} ms/frame",
        f"  encode      {r['encode_ms']} ms/frame ({r['encoder']})",
        f"  pose        {r['pose_ms']} ms/frame (one tracker; person in "
        f"{100 * r['pose_person_found']:.0f} % of frames)",
        f"  video       {'keeps up' if s['video'] else 'CANNOT keep up'}: "
        f"{100 * s['video_core_share']:.0f} % of one core",
        f"  live pose   ~{s['live_pose_fps']} fps with {r['pose_workers']} worker(s): "
        f"{100 * s['live_pose_coverage']:.0f} % of frames",
    ]
    if s["live_pose_coverage"] < 1.0:
        lines.append(f"  backfill    ~{s['backfill_fps_one_core']} fps on an idle core: "
                     f"~{s['backfill_s_per_recorded_min']} s per recorded minute to fill "
                     "the skipped frames")
    return "\n".join(lines)
