"""The media worker: one low-priority thread for replay's cached files (thumbnails, frame
tables), never more than one decode at a time next to capture and pose.

Built by :class:`climbd.daemon.Daemon`; the replay routes (:mod:`climbd.api.replay`) ask it
for a cached file with :meth:`MediaWorker.cached`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from climbd.replay.mp4 import frame_times

__all__ = ["WORKER_NICENESS", "MediaWorker", "fresh", "write_atomic", "write_frame_table"]

#: Niceness of the media worker thread (thumbnails, frame tables): capture and pose first.
WORKER_NICENESS = 10


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``<path>.part`` and a rename (never half a file).

    Raises:
        OSError: the file cannot be written.
    """
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def fresh(cache: Path, source: Path) -> bool:
    """True if ``cache`` exists and is not older than ``source`` (mtime, ns)."""
    try:
        return cache.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


def write_frame_table(video: Path, out: Path) -> None:
    """Write the frame presentation times of ``video`` to ``out``: float64 little-endian,
    8 bytes per frame, seconds (see :func:`climbd.replay.mp4.frame_times` for errors)."""
    write_atomic(out, frame_times(video).astype("<f8").tobytes())


class MediaWorker:
    """One low-priority thread (niceness :data:`WORKER_NICENESS`) and one lock per cached
    file. Call :meth:`close` at shutdown."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="climbd-media", initializer=self._nice)
        self.locks: dict[Path, asyncio.Lock] = {}

    @staticmethod
    def _nice() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)

    def lock(self, path: Path) -> asyncio.Lock:
        """The lock of one cached file (one maker at a time)."""
        return self.locks.setdefault(path, asyncio.Lock())

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def cached(self, video: Path, cache: Path,
                     make: Callable[[Path, Path], Any]) -> None:
        """Make ``cache`` from ``video`` with ``make(video, cache)`` unless it is fresh.

        Raises:
            whatever ``make`` raises (ValueError, OSError, av.FFmpegError).
        """
        async with self.lock(cache):
            if fresh(cache, video):
                return
            cache.parent.mkdir(parents=True, exist_ok=True)
            await self.run(make, video, cache)

    def close(self) -> None:
        """Stop the thread (queued work is cancelled)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
