"""Session thumbnails: a JPEG of the frame nearest the middle of a video (PyAV).

Blocking; run it on the media worker (:class:`climbd.replay.media.MediaWorker`).
"""

from __future__ import annotations

import contextlib
import fractions
from pathlib import Path
from typing import Any

from climbd.replay.media import write_atomic
from climbd.replay.mp4 import video_stream

__all__ = ["THUMB_QUALITY", "THUMB_WIDTH", "make_thumbnail"]

#: Thumbnail width, pixels (height keeps the aspect ratio).
THUMB_WIDTH = 320
#: MJPEG quantiser of thumbnails (2 = best .. 31 = worst); 4 gives ~20 kB at 320x427.
THUMB_QUALITY = 4


def make_thumbnail(video: Path, out: Path, width: int = THUMB_WIDTH,
                   at_s: float | None = None) -> int:
    """Write a JPEG of the frame nearest the middle of ``video`` (or the first frame at or
    after ``at_s`` seconds, e.g. an attempt's lift-off) to ``out`` (atomically).

    Blocking (decodes from the keyframe before the middle); returns the JPEG's size in bytes.

    Raises:
        ValueError: the file has no decodable video frame.
        OSError, av.FFmpegError: the file cannot be read or the JPEG written.
    """
    import av

    frame = None
    with av.open(str(video)) as container:
        stream = video_stream(container)
        tb = stream.time_base or fractions.Fraction(1, 90000)
        duration = (float(stream.duration * tb) if stream.duration
                    else (container.duration or 0) / 1_000_000)
        target = duration / 2 if at_s is None else max(0.0, min(at_s, duration))
        if target > 0:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.seek(int(target / tb), stream=stream, backward=True)
        try:
            for f in container.decode(stream):
                frame = f
                if f.time is None or f.time >= target:
                    break
        except av.FFmpegError:
            if frame is None:
                raise
    if frame is None:
        raise ValueError(f"{video} has no decodable video frame")
    w = min(width, frame.width) // 2 * 2
    h = max(2, round(w * frame.height / frame.width / 2) * 2)
    image = frame.reformat(width=w, height=h, format="yuvj420p")
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 25)
    ctx.qmin = ctx.qmax = THUMB_QUALITY
    data = b"".join(bytes(p) for p in [*ctx.encode(image), *ctx.encode(None)])
    write_atomic(out, data)
    return len(data)
