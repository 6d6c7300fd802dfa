"""Re-encode a video to a short GOP for replay seeks (ingest of files with long GOPs).

A browser seeks an MP4 by decoding from the keyframe at or before the target: with the 10 s
GOP of a typical phone or camera export, a seek decodes up to 250 frames (measured p95 309 ms
from seek to the frame with its skeleton, ``bench/bench_replay.py``, "ingested"), against
~30 frames with the appliance's own 1 s GOP ("recorded"). Measured there, side by side, the
1 s GOP is what makes seeks fast, so ingest re-encodes a file whose GOP is longer than
:data:`MAX_GOP_S` (or that has B-frames, which the replay's frame table maps less exactly)
with libx264: keyframe every second, no B-frames, CRF :data:`CRF` (near lossless for a
wall video), every frame kept with its presentation time. A file that already has a short
GOP is stream-copied as before (:func:`climbd.storage.finalize`).
"""

from __future__ import annotations

import contextlib
import fractions
import logging
import os
from pathlib import Path

import av

from climbd.errors import StorageError
from climbd.storage.segments import VideoFileInfo, finalize, probe

__all__ = ["CRF", "MAX_GOP_S", "gop_problem", "prepare_replay_video"]

log = logging.getLogger(__name__)

#: Longest keyframe interval kept as it is, seconds (the appliance records 1 s).
MAX_GOP_S = 1.05
#: x264 constant rate factor of the re-encode (20: near visually lossless, ~1.5x the size).
CRF = 20


def gop_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` seeks slowly (longest keyframe interval > :data:`MAX_GOP_S`, or
    B-frames), or None. Reads packets only (no decode).

    Raises:
        StorageError: the file cannot be read.
    """
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            if stream.codec_context.has_b_frames:
                return "the video has B-frames"
            last: float | None = None
            longest = 0.0
            t = None
            for packet in c.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                t = float(packet.pts * packet.time_base)
                if packet.is_keyframe:
                    if last is not None:
                        longest = max(longest, t - last)
                    last = t
            if last is not None and t is not None:
                longest = max(longest, t - last)
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if longest > MAX_GOP_S:
        return f"keyframes up to {longest:.1f} s apart"
    return None


def prepare_replay_video(src: str | os.PathLike[str],
                         out: str | os.PathLike[str]) -> tuple[VideoFileInfo, str | None]:
    """Write ``out`` (``+faststart`` MP4) from ``src``: stream copy when its GOP is short,
    else a 1 s GOP re-encode. Returns the new file's :func:`probe` and why it was
    re-encoded (None: copied).

    Raises:
        StorageError: unreadable input or encode failure. DiskFullError: no space.
    """
    why = gop_problem(src)
    if why is None:
        return finalize(src, out), None
    dst = Path(out)
    tmp = dst.with_name(dst.name + ".part")
    try:
        with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4",
                                               options={"movflags": "+faststart"}) as o:
            s = inp.streams.video[0]
            s.thread_type = "AUTO"
            rate = s.average_rate or s.guessed_rate or fractions.Fraction(30)
            enc = o.add_stream("libx264", rate=rate)
            enc.width, enc.height = s.codec_context.width, s.codec_context.height
            enc.pix_fmt = "yuv420p"
            enc.time_base = s.time_base
            gop = max(1, round(float(rate)))
            enc.options = {"crf": str(CRF), "preset": "veryfast", "bf": "0",
                           "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
            enc.codec_context.gop_size = gop
            enc.codec_context.max_b_frames = 0
            for frame in inp.decode(s):
                frame = frame if frame.format.name == "yuv420p" else frame.reformat(
                    format="yuv420p")
                frame.pict_type = av.video.frame.PictureType.NONE
                o.mux(enc.encode(frame))
            o.mux(enc.encode(None))
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, av.FFmpegError | OSError):
            raise StorageError(f"cannot re-encode {src}: {exc}") from exc
        raise
    info = probe(dst)
    log.info("re-encoded %s with a 1 s GOP for replay seeks (%s): %d frames", src, why,
             info.frames)
    return info, why
