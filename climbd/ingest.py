"""Ingest: turn existing video files into sessions, with pose on every frame.

The video stream is copied into the session without re-encoding (:func:`storage.finalize`
remuxes it into a ``+faststart`` MP4) when its GOP is at most ~1 s; a file with a longer GOP
or B-frames is re-encoded with a 1 s GOP so replay seeks are as fast as in a recording
(:mod:`climbd.storage.reencode`). Pose runs on every decoded frame of the source. Decoding
runs on its own thread ahead of inference (a bounded queue of RGB frames), so on two cores
the ingest rate approaches the pose model's own rate. Pose rows are committed in one chunk
per second of media time, as during a live recording. At the end the session's attempts are
detected and measured (:func:`climbd.attempt_service.analyse_session`) and listed in the result.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from climbd.config import PoseConfig
from climbd.errors import SourceError, StorageError
from climbd.pose import PoseEstimator
from climbd.statedir import StateDir
from climbd.storage import Database
from climbd.storage.backfill import BackfillStore
from climbd.storage.reencode import prepare_replay_video

__all__ = ["IngestResult", "decode_rgb_frames", "ingest_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """Summary of one ingested file (``duration_s`` in seconds; ``video`` relative path)."""

    id: int
    name: str
    frames: int
    frames_with_pose: int
    duration_s: float
    video: str
    source: str
    #: ``[{"start_s", "end_s" | None}]``: the attempts found (seconds from the start)
    attempts: tuple[dict[str, float | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``climbd ingest --json``)."""
        return {"id": self.id, "name": self.name, "frames": self.frames,
                "frames_with_pose": self.frames_with_pose, "duration_s": self.duration_s,
                "video": self.video, "source": self.source,
                "attempts": [dict(a) for a in self.attempts]}


def decode_rgb_frames(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, t_s, rgb)`` for every frame of a video file.

    ``t_s`` is seconds from the first frame's presentation time; ``rgb`` an ``(H, W, 3)``
    uint8 array. These are exactly the frames ingest gives to the pose model.

    Raises:
        SourceError: missing file, no video stream, or a decode error.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise SourceError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first: float | None = None
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time or 0.0
                if first is None:
                    first = t
                yield i, t - first, frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise SourceError(f"{path}: decode failed: {exc}") from exc


def _video_params(path: Path) -> tuple[int, int, float, int]:
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise SourceError(f"{path} has no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            return s.codec_context.width, s.codec_context.height, float(rate or 30), s.frames
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {path}: {exc}") from exc


Progress = Callable[[int, int, float], None]


def terminal_progress(name: str) -> Progress:
    """A progress printer for a terminal (``\\r`` line on stderr), or a no-op if not a tty."""
    if not sys.stderr.isatty():
        return lambda done, total, fps: None

    def show(done: int, total: int, fps: float) -> None:
        pct = f"{100 * done / total:5.1f}%" if total else ""
        bar = "#" * int(30 * done / total) if total else ""
        sys.stderr.write(f"\r{name[:30]:30} [{bar:30}] {pct} {done}/{total or '?'}"
                         f" frames {fps:5.1f} fps")
        if total and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


async def ingest_file(path: str | Path, db: Database, state_dir: Path,
                      pose_config: PoseConfig | None = None, name: str | None = None,
                      progress: Progress | None = None) -> IngestResult:
    """Ingest one video file as a completed session.

    Raises:
        SourceError: the file is missing, has no video or cannot be decoded (a session that
            was already created is marked failed with the reason).
        StorageError: the database or the disk failed.
    """
    src = Path(path)
    if not src.is_file():
        raise SourceError(f"video file not found: {src}")
    width, height, fps, total = _video_params(src)
    rec = await db.create_session(
        name=name or src.stem, description=f"ingested from {src.name}", climber="",
        source=str(src), width=width, height=height, fps=fps, video_path="")
    rec = await db.finish_session(rec.id, status="processing")
    paths = StateDir(state_dir)
    video = paths.video(rec.id)
    try:
        video.parent.mkdir(parents=True, exist_ok=True)
        info, reencoded = await asyncio.to_thread(prepare_replay_video, src, video)
        if reencoded:
            log.info("%s: %s: re-encoded with a 1 s GOP so replay seeks stay fast",
                     src.name, reencoded)
        frames, with_pose = await _pose_all(src, db, rec.id, pose_config or PoseConfig(),
                                            total, progress)
    except (SourceError, StorageError, OSError) as exc:
        await db.finish_session(rec.id, status="failed", error=str(exc))
        raise
    video_path = paths.relative(video)
    await db.finish_session(rec.id, status="completed", frame_count=frames,
                            duration_s=info.duration_s, video_path=video_path)
    await BackfillStore(db).begin(rec.id)  # pose ran on every frame: complete at once
    from climbd.attempt_service import analyse_session

    found = await analyse_session(db, rec.id)
    return IngestResult(rec.id, rec.name, frames, with_pose, round(info.duration_s, 4),
                        video_path, str(src),
                        tuple({"start_s": a["start_s"], "end_s": a["end_s"]} for a in found))


_END = object()


async def _pose_all(src: Path, db: Database, session_id: int, config: PoseConfig,
                    total: int, progress: Progress | None) -> tuple[int, int]:
    """Decode thread → pose thread → commits on the loop; returns (frames, frames_with_pose)."""
    loop = asyncio.get_running_loop()
    frames_q: queue.Queue[Any] = queue.Queue(maxsize=8)
    chunks: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def decode() -> None:
        try:
            for item in decode_rgb_frames(src):
                while not stop.is_set():
                    try:
                        frames_q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            frames_q.put(_END)
        except SourceError as exc:
            frames_q.put(exc)

    def infer() -> None:
        pending: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        chunk_end = 1.0
        n = 0
        t0 = time.perf_counter()
        try:
            with PoseEstimator(config) as estimator:
                while True:
                    item = frames_q.get()
                    if item is _END:
                        break
                    if isinstance(item, Exception):
                        raise item
                    index, t, rgb = item
                    if t >= chunk_end and pending:
                        loop.call_soon_threadsafe(chunks.put_nowait, (pending, n, t))
                        pending = []
                        chunk_end = float(np.floor(t)) + 1.0
                    pose = estimator.process(rgb, index, t)
                    n += 1
                    if pose.image is not None and pose.world is not None:
                        pending.append((index, t, pose.image, pose.world))
                    if progress is not None and (n % 10 == 0 or n == total):
                        progress(n, total, n / (time.perf_counter() - t0))
            loop.call_soon_threadsafe(chunks.put_nowait, (pending, n, None))
            loop.call_soon_threadsafe(chunks.put_nowait, _END)
        except Exception as exc:
            loop.call_soon_threadsafe(chunks.put_nowait, exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=decode, name="ingest-decode", daemon=True),
               threading.Thread(target=infer, name="ingest-pose", daemon=True)]
    for t in threads:
        t.start()
    frames = with_pose = 0
    try:
        while True:
            item = await chunks.get()
            if item is _END:
                break
            if isinstance(item, Exception):
                raise item
            pending, n, t_next = item
            analyzed, frames = n - frames, n
            with_pose += len(pending)
            idx = np.array([p[0] for p in pending], np.int32)
            ts = np.array([p[1] for p in pending], np.float64)
            image = (np.stack([p[2] for p in pending]) if pending
                     else np.zeros((0, 33, 5), np.float32))
            world = (np.stack([p[3] for p in pending]) if pending
                     else np.zeros((0, 33, 3), np.float32))
            duration = t_next if t_next is not None else (float(ts[-1]) if len(ts) else 0.0)
            await db.append_poses(session_id, idx, ts, image, world, frame_count=n,
                                  duration_s=duration, analyzed=analyzed)
    finally:
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join, 5.0)
    return frames, with_pose
