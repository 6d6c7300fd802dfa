"""Errors of the live view: re-exported from :mod:`climbd.errors` (the one exception
tree), where they are defined. :mod:`climbd.api.status` maps them to HTTP."""

from climbd.errors import (
    CandidateError,
    DelayOutOfRange,
    LiveViewError,
    OfferError,
    UnknownViewer,
    ViewerLimitReached,
)

__all__ = ["CandidateError", "DelayOutOfRange", "LiveViewError", "OfferError",
           "UnknownViewer", "ViewerLimitReached"]
