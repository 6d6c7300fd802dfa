"""Storage of sessions: the SQLite catalog, pose chunks and crash-safe video files.

- :mod:`climbd.storage.database`: :class:`Database`, the session catalog (aiosqlite, WAL).
- :mod:`climbd.storage.posecodec`: the binary pose chunk format and :class:`PoseSeries`.
- :mod:`climbd.storage.segments`: :class:`FragmentedMp4Writer`, :func:`finalize`,
  :func:`probe` (PyAV, stream copy only).

Errors are those of :mod:`climbd.errors`: :class:`~climbd.errors.StorageError`,
:class:`~climbd.errors.DiskFullError` and :class:`~climbd.errors.SessionNotFound`.
"""

from climbd.storage.database import (
    MIGRATIONS,
    SESSION_STATUSES,
    Database,
    SessionRecord,
    SessionStatus,
    default_session_name,
)
from climbd.storage.posecodec import (
    BYTES_PER_FRAME,
    FORMAT_VERSION,
    HEADER_SIZE,
    PoseSeries,
    decode_chunk,
    encode_chunk,
)
from climbd.storage.segments import (
    FRAGMENTED_MOVFLAGS,
    FragmentedMp4Writer,
    VideoFileInfo,
    finalize,
    probe,
)

__all__ = [
    "BYTES_PER_FRAME",
    "FORMAT_VERSION",
    "FRAGMENTED_MOVFLAGS",
    "HEADER_SIZE",
    "MIGRATIONS",
    "SESSION_STATUSES",
    "Database",
    "FragmentedMp4Writer",
    "PoseSeries",
    "SessionRecord",
    "SessionStatus",
    "VideoFileInfo",
    "decode_chunk",
    "default_session_name",
    "encode_chunk",
    "finalize",
    "probe",
]
