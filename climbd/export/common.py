"""What every export kind shares: the result type, progress and cancellation, and the
atomic ``.part`` output file that never leaves a partial export behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from climbd.errors import DiskFullError, ExportCancelled, ExportError, StorageError

__all__ = [
    "ExportCancelled",
    "ExportResult",
    "Progress",
    "ShouldStop",
    "atomic_output",
    "is_disk_full",
    "never",
]

log = logging.getLogger(__name__)

#: ``progress(done, total)``: units (frames, packets or pose rows) done of ``total``
#: (``total`` may be 0 when unknown). Called often: keep it cheap.
Progress = Callable[[int, int], None]
#: Polled between frames; True asks the export to stop (it then raises ExportCancelled).
ShouldStop = Callable[[], bool]


def never() -> bool:
    """A :data:`ShouldStop` that never asks to stop."""
    return False


@dataclass(frozen=True)
class ExportResult:
    """What an export produced.

    Attributes:
        path: the output file.
        frames: video frames written (video kinds) or pose rows (csv/json).
        bytes: output size in bytes.
        actual_start_s, actual_end_s: the part of the session that was exported, seconds
            from the session start (a stream copy starts at a keyframe; the end is the end
            of the last frame); for pose data, the first and last pose time.
        duration_s: playing time of the output video (``(end - start) / speed``); 0 for
            pose data.
        note: remarks for the user (e.g. where a stream copy was cut).
    """

    path: Path
    frames: int
    bytes: int
    actual_start_s: float
    actual_end_s: float
    duration_s: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``path`` as a string)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC (EDQUOT too), from Python or from FFmpeg (PyAV keeps the errno)."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Write an export to ``<path>.part`` and move it to ``path`` only on success.

    Yields the ``.part`` path. On any exception the partial file is removed; ENOSPC becomes
    :class:`DiskFullError` ("disk full while writing ..., partial file removed"), any other
    OS error a :class:`StorageError`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        yield part
        if not part.exists():
            raise ExportError(f"the export wrote no file {part}")
        os.replace(part, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            part.unlink()
        if isinstance(exc, ExportError | StorageError):
            raise
        if is_disk_full(exc):
            raise DiskFullError(f"disk full while writing {path.name}; the partial file was "
                                f"removed") from exc
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {path}: {exc}") from exc
        raise
