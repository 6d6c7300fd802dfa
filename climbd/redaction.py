"""Credential redaction for anything that leaves the process: health, logs, API, UI, STATUS.

Camera URLs carry credentials (``rtsp://admin:secret@192.168.1.30/stream1``, or
``http://cam/video.cgi?user=admin&pwd=secret``). :func:`redact_url` is the one function every
part of climbd uses before it shows a source string or an error message that may quote one
(FFmpeg errors often repeat the URL). It has no dependencies so any module can import it.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "RedactingFilter", "redact_url"]

#: What replaces a secret.
REDACTED = "***"

# scheme://userinfo@ — userinfo is everything up to the last "@" before the host part ends
# (RFC 3986 §3.2.1; an unescaped "@" in a password, common in hand-typed camera URLs, is
# covered by matching up to the last "@" before the first "/", "?", "#" or whitespace).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@")
# query parameters that name credentials (?user=..&password=.., &pwd=, &token=, &key=)
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:user(?:name)?|login|pass(?:word|wd)?|pwd|token|auth|key|secret|sig"
    r"|signature|api_?key|access_?token)=)[^&;#\s]*"
)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    Works on a bare URL and on free text that quotes URLs (log lines, FFmpeg errors):
    ``rtsp://admin:pw@cam/s`` → ``rtsp://***@cam/s``; ``http://c/v.cgi?user=a&pwd=b`` →
    ``http://c/v.cgi?user=***&pwd=***``. Text without URLs is returned unchanged; the
    scheme, host, port and path stay visible so the camera can still be identified.

    Args:
        text: a source string or message (any length).

    Returns:
        The redacted string.
    """
    if "@" not in text and "=" not in text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    if "://" in out:
        out = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", out)
    return out


class RedactingFilter:
    """A :mod:`logging` filter that redacts every record's formatted message.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``): the record's
    ``msg``/``args`` are replaced by the redacted, already formatted text, so no log line a
    handler emits (climbd's own, or a library's quoting a URL) carries camera credentials.
    """

    def filter(self, record: object) -> bool:
        """Redact ``record`` in place; always keeps it (returns True)."""
        import logging

        assert isinstance(record, logging.LogRecord)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:  # tracebacks quote messages too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_url(record.exc_text)
        return True
