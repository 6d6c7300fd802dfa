"""Errors of the live view. They know nothing about HTTP; :mod:`climbd.api.whep` maps them.

::

    ClimbdError
    └── LiveViewError
        ├── OfferError              the SDP offer is malformed or asks for what we cannot send
        ├── ViewerLimitReached      webrtc.max_viewers sessions exist already
        ├── UnknownViewer           no live session with that id (ended, or never existed)
        ├── CandidateError          a trickle-ICE fragment cannot be applied
        └── DelayOutOfRange         a delayed view of a delay the buffer cannot give
"""

from __future__ import annotations

from climbd.errors import ClimbdError

__all__ = ["CandidateError", "DelayOutOfRange", "LiveViewError", "OfferError",
           "UnknownViewer", "ViewerLimitReached"]


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
    of ``"no-video"``, ``"no-h264"``, ``"bad-direction"`` (well-formed, but nothing we can
    send to it).
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
