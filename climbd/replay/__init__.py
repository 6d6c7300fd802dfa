"""Replay's media work, free of HTTP: frame time tables from MP4 sample tables
(:mod:`.mp4`), thumbnails (:mod:`.thumbnail`) and the low-priority worker that makes and
caches them (:mod:`.media`). The routes are in :mod:`climbd.api.replay`."""

from climbd.replay.media import MediaWorker
from climbd.replay.mp4 import frame_times
from climbd.replay.thumbnail import make_thumbnail

__all__ = ["MediaWorker", "frame_times", "make_thumbnail"]
