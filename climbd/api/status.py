"""The one table from climbd's exceptions (:mod:`climbd.errors`) to HTTP statuses.

The error middleware (:mod:`climbd.api.app`) answers every :class:`~climbd.errors.ClimbdError`
a handler lets through with :func:`status_for` and the JSON error body; the WHEP handlers
(:mod:`climbd.api.whep`) use the same function for their ``application/problem+json``
answers. The most specific class wins (method resolution order).
"""

from __future__ import annotations

from climbd import errors

__all__ = ["STATUS", "status_for"]

#: HTTP status for each error class (first match in MRO order wins).
STATUS: dict[type[Exception], int] = {
    errors.SessionNotFound: 404,
    errors.AlreadyRecording: 409,
    errors.NotRecording: 409,
    errors.NoMediaYet: 503,
    errors.BeyondBuffer: 422,
    errors.DiskFullError: 507,
    errors.InsufficientStorage: 507,
    errors.ConfigError: 400,
    errors.StorageError: 500,
    errors.RecordingError: 409,
    errors.ExportNotFound: 404,
    errors.ExportBusy: 429,
    errors.ExportRangeError: 422,
    errors.ExportUnavailable: 409,
    errors.ExportError: 400,
    errors.UnknownViewer: 404,
    errors.ViewerLimitReached: 503,
    errors.OfferError: 422,      # well-formed but unsatisfiable; malformed SDP: 400 (below)
    errors.CandidateError: 400,  # malformed fragment; an ICE restart: 422 (below)
    errors.DelayOutOfRange: 422,
    errors.LiveViewError: 400,
}

#: Live-view errors whose ``code`` decides a different status than their class.
_BY_CODE: dict[str, int] = {"malformed-sdp": 400, "ice-restart": 422}


def status_for(exc: BaseException) -> int:
    """The HTTP status of ``exc`` (500 for anything not in :data:`STATUS`)."""
    if isinstance(exc, errors.LiveViewError) and exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500
