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
    │   ├── NoMediaYet              save-last/pre-roll before any keyframe was captured
    │   └── BeyondBuffer            save-last of more seconds than the buffer keeps
    ├── ExportError                 an export that cannot be made
    │   ├── ExportNotFound          no export (or share) with that id
    │   ├── ExportBusy              the export queue is full
    │   ├── ExportRangeError        range or speed does not fit the session
    │   ├── ExportUnavailable       not exportable in that form now (recording, no video)
    │   └── ExportCancelled         cancelled while running
    ├── LiveViewError               the live view (WHEP) cannot do what was asked
    │   ├── OfferError              the SDP offer is malformed or asks for what we cannot send
    │   ├── ViewerLimitReached      webrtc.max_viewers sessions exist already
    │   ├── UnknownViewer           no live session with that id (ended, or never existed)
    │   ├── CandidateError          a trickle-ICE fragment cannot be applied
    │   └── DelayOutOfRange         a delayed view of a delay the buffer cannot give
    ├── GhostError                  a ghost control that cannot be carried out (data channel)
    │   ├── NoAttempt               the ghost session has no attempt of the index asked for
    │   └── NoLiftoff               an arm at lift-off while live pose is off or failed
    └── GpioError                   a GPIO chip or line cannot be opened or requested

Every module raises these and none knows about HTTP: :data:`climbd.api.status.STATUS` is
the one table that maps them to HTTP statuses. Errors with a ``code`` carry the code of the
reply that names them (the WHEP problem body, or a data channel's ``error`` message).
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


class ExportNotFound(ExportError):
    """No export (or share) has the given id."""

    def __init__(self, what: str, ident: object):
        self.ident = ident
        super().__init__(f"no {what} with id {ident!r}")


class ExportBusy(ExportError):
    """The export queue is full (HTTP 429): try again when an export finished."""


class ExportRangeError(ExportError):
    """The requested range or speed does not fit the session (HTTP 422)."""


class ExportUnavailable(ExportError):
    """The session cannot be exported in that form now: it is still recording or being
    ingested, or it has no video for a video export (HTTP 409)."""


class ExportCancelled(ExportError):
    """The export was cancelled while running (its partial file is removed)."""


class LiveViewError(ClimbdError):
    """Base of the live-view errors; ``code`` is a short machine-readable reason."""

    code = "live-view-error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class OfferError(LiveViewError):
    """The offer cannot be answered.

    ``code`` is ``"malformed-sdp"`` (not parseable SDP, missing ICE/DTLS attributes) or one
    of ``"no-video"``, ``"no-h264"``, ``"bad-direction"``, ``"no-h264-profile"`` (a camera's
    passed-through H.264 profile the offer lacks) (well-formed, but nothing we can send to
    it).
    """

    code = "malformed-sdp"

    @property
    def malformed(self) -> bool:
        """True when the SDP itself is broken (as opposed to unsatisfiable)."""
        return self.code == "malformed-sdp"


class ViewerLimitReached(LiveViewError):
    """Every viewer slot (``webrtc.max_viewers``) is taken."""

    code = "viewer-limit"

    def __init__(self, limit: int):
        super().__init__(f"the live view is full: {limit} viewer(s) already connected")
        self.limit = limit


class UnknownViewer(LiveViewError):
    """No live session has this id."""

    code = "unknown-session"

    def __init__(self, session_id: str):
        super().__init__(f"no live session {session_id!r}")
        self.session_id = session_id


class CandidateError(LiveViewError):
    """A trickle-ICE SDP fragment (RFC 8840) is malformed or asks for an ICE restart."""

    code = "bad-candidate"


class DelayOutOfRange(LiveViewError):
    """A delayed view was asked for a delay outside 1 s .. the buffer length
    (``recording.buffer_s``), or there is no buffer."""

    code = "delay-out-of-range"


class GhostError(ClimbdError):
    """A ghost control (data-channel ``ghost`` message) that cannot be carried out; the
    player answers with an ``error`` message of :attr:`code` and changes nothing."""

    code = "ghost-invalid"


class NoAttempt(GhostError):
    """The ghost session has no attempt of the index an arm at lift-off asked for."""

    code = "ghost-no-attempt"


class NoLiftoff(GhostError):
    """An arm at lift-off while nothing can see the live climber leave the ground (live
    pose off or failed)."""

    code = "ghost-no-liftoff"


class GpioError(ClimbdError):
    """A GPIO chip or line cannot be opened, found or requested.

    ``errno`` is the OS error number when the kernel refused (e.g. ``EBUSY``), else None.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
