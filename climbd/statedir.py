"""The layout of the state directory: every path climbd writes, named in one place.

::

    <root>/
    ├── climbd.db                    SQLite catalog (WAL: climbd.db-wal, climbd.db-shm)
    ├── reserve.bin                  ballast freed on a full disk (storage.reserve_mb)
    ├── sessions/<id>/
    │   ├── recording.mp4            fragmented MP4 while recording (kept if a remux fails)
    │   ├── video.mp4                the finalised MP4 (+faststart)
    │   ├── thumbnail.jpg            replay thumbnail (cache)
    │   └── frames.f64               frame presentation times, float64 LE (cache)
    └── exports/<id>/<file>          export files (video, overlay, csv, json)

Pure (``pathlib`` only): no directory is created except by :meth:`StateDir.create`. Paths
stored in the database (``sessions.video_path``, ``exports.path``) are relative to the root;
:meth:`StateDir.resolve_inside` turns one back into a path and refuses anything outside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DB_NAME",
    "EXPORTS_DIR",
    "FRAGMENT_NAME",
    "FRAMES_NAME",
    "RESERVE_NAME",
    "SESSIONS_DIR",
    "THUMB_NAME",
    "VIDEO_NAME",
    "StateDir",
]

DB_NAME = "climbd.db"
RESERVE_NAME = "reserve.bin"
SESSIONS_DIR = "sessions"
EXPORTS_DIR = "exports"
#: Files in a session's directory.
FRAGMENT_NAME = "recording.mp4"
VIDEO_NAME = "video.mp4"
THUMB_NAME = "thumbnail.jpg"
FRAMES_NAME = "frames.f64"


@dataclass(frozen=True)
class StateDir:
    """The state directory rooted at ``root`` (``--state-dir``, default
    ``/var/lib/climbd``)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root))

    def create(self) -> None:
        """Create the root if missing.

        Raises:
            OSError: it cannot be created.
        """
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def db(self) -> Path:
        """The SQLite catalog."""
        return self.root / DB_NAME

    @property
    def reserve(self) -> Path:
        """The reserve (ballast) file."""
        return self.root / RESERVE_NAME

    @property
    def sessions(self) -> Path:
        """The parent of every session directory."""
        return self.root / SESSIONS_DIR

    def session_dir(self, session_id: int) -> Path:
        """``sessions/<id>``."""
        return self.sessions / str(session_id)

    def fragment(self, session_id: int) -> Path:
        """``sessions/<id>/recording.mp4``: the fMP4 written while recording."""
        return self.session_dir(session_id) / FRAGMENT_NAME

    def video(self, session_id: int) -> Path:
        """``sessions/<id>/video.mp4``: the finalised MP4."""
        return self.session_dir(session_id) / VIDEO_NAME

    def thumbnail(self, session_id: int) -> Path:
        """``sessions/<id>/thumbnail.jpg`` (replay cache)."""
        return self.session_dir(session_id) / THUMB_NAME

    def frame_table(self, session_id: int) -> Path:
        """``sessions/<id>/frames.f64`` (replay cache)."""
        return self.session_dir(session_id) / FRAMES_NAME

    @property
    def exports(self) -> Path:
        """The parent of every export directory."""
        return self.root / EXPORTS_DIR

    def export_dir(self, export_id: int) -> Path:
        """``exports/<id>``."""
        return self.exports / str(export_id)

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, as stored in the database.

        Raises:
            ValueError: ``path`` is not inside the root.
        """
        return str(path.relative_to(self.root))

    def resolve_inside(self, stored: str) -> Path | None:
        """The absolute path of a database-stored relative path, or None if it resolves
        outside the root (``..``, an absolute path, a symlink out) or is not a file."""
        root = self.root.resolve()
        path = (self.root / stored).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path
