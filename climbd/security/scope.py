"""Re-export: the session-visibility scope (:class:`Viewer`) lives in
:mod:`climbd.visibility`, which both the storage layer (filters by it) and the security layer
(sets it per request) import; storage must not import security."""

from climbd.visibility import (
    SYSTEM,
    Viewer,
    check_visible,
    current,
    session_filter_sql,
    viewing,
)

__all__ = ["SYSTEM", "Viewer", "check_visible", "current", "session_filter_sql", "viewing"]
