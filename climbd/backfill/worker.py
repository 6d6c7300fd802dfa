"""The backfill worker process: ``python -m climbd.backfill.worker``.

Protocol (like :mod:`climbd.export.worker`): one JSON line on stdin, the job::

    {"video": "/state/sessions/7/video.mp4", "start_frame": 0, "pose": {...PoseConfig},
     "nice": 19, "idle_priority": true, "chunk_s": 1.0}

then JSON lines on stdout: ``{"event": "started", "pid", "priority"}``; per ``chunk_s``
seconds of video ``{"event": "chunk", "next_frame": k, "n": poses, "t_start", "t_end",
"blob": base64 chunk | null, "analyzed": frames}`` (``blob`` is a
:func:`climbd.storage.posecodec.encode_chunk` of the poses found in frames
``[previous next_frame, k)``, session frame indices and seconds from the first frame); and
finally ``{"event": "done", "frames": total video frames}`` or ``{"event": "error",
"error", "message"}``. Stdin EOF or SIGTERM stop it at the next frame (exit 3).

Resuming at ``start_frame > 0``: the frames before it are decoded but not converted, and the
last :data:`WARMUP_FRAMES` of them go through the tracker with their results thrown away, so
the tracker has the climber's region of interest again when the first kept frame arrives
(detection-only on the first kept frame would be just as correct, but not as continuous).

Exit codes: 0 done, 1 failed, 2 bad input, 3 cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from climbd.export.worker import lower_priority

__all__ = ["WARMUP_FRAMES", "main", "run"]

#: Frames before the resume point fed to the tracker (results discarded) to re-acquire it.
WARMUP_FRAMES = 15


def _send(event: dict[str, Any]) -> bool:
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
        return True
    except (BrokenPipeError, OSError):
        return False


def run(spec: dict[str, Any], cancelled: threading.Event) -> int:
    """Analyse ``spec["video"]`` from ``spec["start_frame"]``; returns the exit code."""
    import base64

    import av
    import numpy as np

    from climbd.config import PoseConfig
    from climbd.errors import ClimbdError
    from climbd.pose import PoseEstimator
    from climbd.storage.posecodec import encode_chunk

    video = str(spec["video"])
    start = max(0, int(spec.get("start_frame", 0)))
    chunk_s = float(spec.get("chunk_s", 1.0))
    warm_from = max(0, start - WARMUP_FRAMES)
    pending: list[tuple[int, float, np.ndarray, np.ndarray]] = []
    covered = start   # first frame index not yet reported
    analyzed = 0
    index = -1
    chunk_end: float | None = None

    def flush(next_frame: int) -> bool:
        nonlocal pending, covered, analyzed
        blob = None
        t0 = t1 = 0.0
        if pending:
            blob = base64.b64encode(encode_chunk(
                np.array([p[0] for p in pending], np.int32),
                np.array([p[1] for p in pending], np.float64),
                np.stack([p[2] for p in pending]), np.stack([p[3] for p in pending]))).decode()
            t0, t1 = pending[0][1], pending[-1][1]
        ok = _send({"event": "chunk", "next_frame": next_frame, "n": len(pending),
                    "t_start": t0, "t_end": t1, "blob": blob, "analyzed": analyzed})
        pending, covered, analyzed = [], next_frame, 0
        return ok

    try:
        estimator = PoseEstimator(PoseConfig(**spec.get("pose", {})))
    except ClimbdError as exc:
        _send({"event": "error", "error": type(exc).__name__, "message": str(exc)})
        return 1
    try:
        with av.open(video) as container:
            if not container.streams.video:
                raise ValueError(f"{video} has no video stream")
            stream = container.streams.video[0]
            stream.thread_count = 1   # one core at idle priority is what we ask for
            first: float | None = None
            for frame in container.decode(stream):
                if cancelled.is_set():
                    return 3
                index += 1
                t = float(frame.time or 0.0)
                if first is None:
                    first = t
                t -= first
                if index < warm_from:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                pose = estimator.process(rgb, index, t)
                if index < start:
                    continue
                if chunk_end is None:
                    chunk_end = (np.floor(t / chunk_s) + 1.0) * chunk_s
                elif t >= chunk_end:
                    if not flush(index):
                        return 3
                    chunk_end = (np.floor(t / chunk_s) + 1.0) * chunk_s
                analyzed += 1
                if pose.image is not None and pose.world is not None:
                    pending.append((index, t, pose.image, pose.world))
        total = index + 1
        if total > covered and not flush(total):
            return 3
        _send({"event": "done", "frames": total})
        return 0
    except (av.FFmpegError, OSError, ValueError, ClimbdError) as exc:
        _send({"event": "error", "error": type(exc).__name__, "message": str(exc)})
        return 1
    finally:
        estimator.close()


def main() -> int:
    """Read a job from stdin, run it, report on stdout."""
    line = sys.stdin.readline()
    try:
        spec = json.loads(line)
        if not isinstance(spec, dict) or "video" not in spec:
            raise ValueError("no video")
    except ValueError:
        if not line:
            return 3
        _send({"event": "error", "error": "ValueError", "message": "bad backfill job"})
        return 2
    priority = lower_priority(int(spec.get("nice", 19)), bool(spec.get("idle_priority", True)))
    cancelled = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        cancelled.set()

    threading.Thread(target=watch_stdin, name="backfill-cancel", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda _s, _f: cancelled.set())
    _send({"event": "started", "pid": os.getpid(), "priority": priority,
           "at": time.time()})
    return run(spec, cancelled)


if __name__ == "__main__":
    sys.exit(main())
