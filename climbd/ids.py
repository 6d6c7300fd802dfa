"""The one parser of numeric ids in URLs (sessions, exports, shares, devices, tokens).

Pure (no HTTP): the API (:mod:`climbd.api.ids`) and the security layer both use it, so a
path segment is an id in exactly the same cases everywhere.
"""

from __future__ import annotations

__all__ = ["MAX_ID_DIGITS", "parse_id"]

#: Longest id accepted, digits (SQLite INTEGER is 64-bit: 18 digits always fit).
MAX_ID_DIGITS = 18


def parse_id(raw: str) -> int | None:
    """``raw`` as an id, or None if it is not 1 to :data:`MAX_ID_DIGITS` ASCII digits.

    ``str.isdigit`` alone is not enough: ``"²"`` and ``"٣"`` are digits to Python but
    ``int("²")`` raises, which used to turn ``/api/sessions/%C2%B2`` into a 500.
    """
    if not raw or len(raw) > MAX_ID_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)
