"""The exception tree of climbd, in one place (as httpx does).

::

    ClimbdError
    ├── ConfigError                 bad or unknown configuration value (key path + value)
    ├── SourceError                 a capture source cannot be opened or stopped delivering
    ├── PoseError                   the pose model cannot be loaded or failed on a frame
    ├── StorageError                the database or the video files cannot be used
    │   ├── DiskFullError           ENOSPC / SQLITE_FULL while writing
    │   ├── InsufficientStorage     free space below the floor: a recording is refused
    │   └── SessionNotFound         no session with that id
    ├── RecordingError              a recording command that cannot be carried out now
    │   ├── AlreadyRecording        start while a recording runs
    │   ├── NotRecording            stop while nothing records
    │   └── NoMediaYet              save-last/pre-roll before any keyframe was captured
    └── ExportError                 an export that cannot be made

HTTP handlers map these to 4xx/5xx JSON errors (see :mod:`climbd.api`); stage modules raise
them and never know about HTTP.
"""

from __future__ import annotations


class ClimbdError(Exception):
    """Base class of every error climbd raises on purpose."""


class ConfigError(ClimbdError):
    """A configuration file or value is invalid.

    ``problems`` lists ``(key_path, message, value)`` tuples, one per bad key, e.g.
    ``("capture.fps", "Input should be greater than 0", -3)``.
    """

    def __init__(self, message: str, problems: list[tuple[str, str, object]] | None = None):
        self.problems = problems or []
        if self.problems:
            lines = [f"{path}: {msg} (got {value!r})" for path, msg, value in self.problems]
            message = message + "\n  " + "\n  ".join(lines)
        super().__init__(message)


class SourceError(ClimbdError):
    """A capture source (camera, file, URL) cannot be opened or failed while reading."""


class PoseError(ClimbdError):
    """The pose model cannot be loaded, or inference failed."""


class StorageError(ClimbdError):
    """The session database or the session files cannot be read or written."""


class DiskFullError(StorageError):
    """The disk holding the state directory is full (ENOSPC or SQLITE_FULL)."""


class InsufficientStorage(StorageError):
    """Free space in the state directory is below the configured floor, so a recording is
    refused before it starts (see :mod:`climbd.retention`). HTTP 507."""


class SessionNotFound(StorageError):
    """No session has the given id (or it is not visible to the caller)."""

    def __init__(self, session_id: object):
        self.session_id = session_id
        super().__init__(f"no session with id {session_id!r}")


class RecordingError(ClimbdError):
    """A recording command cannot be carried out in the recorder's current state."""


class AlreadyRecording(RecordingError):
    """``start`` was asked while a recording is running."""


class NotRecording(RecordingError):
    """``stop`` was asked while nothing is recording."""


class NoMediaYet(RecordingError):
    """No keyframe has been captured yet, so there is nothing to record or save."""


class BeyondBuffer(RecordingError):
    """More seconds were asked of the in-memory buffer than it can hold
    (``recording.buffer_s``), e.g. save-last of 120 s with a 30 s buffer."""


class ExportError(ClimbdError):
    """An export cannot be produced (unknown session, bad range, disk full...)."""
