"""systemd integration: readiness and watchdog notifications, status line, journald logging.

Nothing here needs systemd: ``systemd-python`` (extra ``systemd``) is used when importable, and
without it notifications still work — an ``sd_notify`` message is one datagram on the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` — while logging falls back to stderr.

Protocol facts, from the systemd man pages:

- sd_notify(3): ``$NOTIFY_SOCKET`` is the path of an ``AF_UNIX`` ``SOCK_DGRAM`` socket; a
  leading ``@`` means the Linux abstract namespace. The message is newline-separated
  ``VARIABLE=value`` assignments: ``READY=1`` (start-up finished; required by ``Type=notify``),
  ``STATUS=...`` (free-form one-line status shown by ``systemctl status``), ``WATCHDOG=1``
  (keep-alive ping), ``STOPPING=1`` (shutdown began).
- sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` is the watchdog timeout in microseconds; when
  ``$WATCHDOG_PID`` is set, only the process with that PID is meant to send pings. A daemon
  should ping at half the timeout ("it is recommended to send a keep-alive notification every
  half of the time returned here").
- systemd.exec(5): ``$JOURNAL_STREAM`` is set when stdout/stderr go to the journal and
  ``$INVOCATION_ID`` for every unit started by systemd.

The watchdog says *the pipeline* is alive, not just the event loop: :func:`supervise` pings
only while ``daemon.pipeline_alive()`` is True (fresh camera frames and fresh pose results),
so a capture or pose thread that hangs makes systemd restart the daemon (``WatchdogSec=``,
``Restart=on-failure`` in ``systemd/climbd.service``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from climbd.redaction import RedactingFilter, redact_url

__all__ = [
    "JournalFieldsFilter",
    "Notifier",
    "bind",
    "format_duration",
    "format_status",
    "running_under_systemd",
    "setup_logging",
    "supervise",
]

log = logging.getLogger(__name__)

try:  # systemd-python is optional: not on every dev box
    import systemd.daemon as _sd_daemon
except ImportError:  # pragma: no cover - depends on the environment
    _sd_daemon = None

try:
    import systemd.journal as _sd_journal
except ImportError:  # pragma: no cover - depends on the environment
    _sd_journal = None

#: Interval of :func:`supervise` when no watchdog is configured (seconds): STATUS= stays fresh.
DEFAULT_SUPERVISE_INTERVAL_S = 5.0
#: Longest STATUS= text sent (characters); ``systemctl status`` shows one line.
STATUS_MAX_CHARS = 200


# --------------------------------------------------------------------------- sd_notify


class Notifier:
    """Sends sd_notify(3) messages to the service manager, or does nothing outside systemd.

    Args:
        environ: where ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` are read
            (default ``os.environ``; read once, here).
        use_libsystemd: send through ``systemd.daemon.notify`` when systemd-python is
            importable (default); False forces the standard-library datagram.

    Send failures are logged once and never raised: a daemon must not die because its
    manager went away.
    """

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, use_libsystemd: bool = True
    ) -> None:
        env = os.environ if environ is None else environ
        self._socket_path = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        # libsystemd reads $NOTIFY_SOCKET itself, so it is only used when the environment
        # given here is the process's own.
        self._use_lib = use_libsystemd and _sd_daemon is not None and environ is None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return self._socket_path is not None

    def notify(self, message: str) -> bool:
        """Send raw ``VARIABLE=value`` lines; True if sent, False when disabled or failed."""
        if self._socket_path is None:
            return False
        if self._use_lib and _sd_daemon is not None:
            try:
                ok = bool(_sd_daemon.notify(message))
            except Exception as exc:  # C extension errors: treat as a failed send
                ok = False
                self._warn(f"systemd.daemon.notify failed: {exc}")
            return ok
        return self._send_datagram(message)

    def _send_datagram(self, message: str) -> bool:
        assert self._socket_path is not None
        path = self._socket_path
        if path.startswith("@"):
            address: str | bytes = "\0" + path[1:]  # abstract namespace, sd_notify(3)
        elif path.startswith("/"):
            address = path
        else:
            self._warn(f"NOTIFY_SOCKET={path!r} is not an AF_UNIX path; notifications disabled")
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), address)
        except OSError as exc:
            self._warn(f"cannot notify {path}: {exc.strerror or exc}")
            return False
        return True

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s (further notify errors not logged)", text)

    def ready(self) -> bool:
        """``READY=1``: start-up finished (``Type=notify`` leaves "activating")."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line (newlines become spaces; cut at 200 characters)."""
        line = " ".join(text.split())[:STATUS_MAX_CHARS]
        return self.notify(f"STATUS={line}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive ping; resets the ``WatchdogSec=`` timer."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown began (sent before finalising a recording)."""
        return self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``$WATCHDOG_USEC``, or None without a watchdog.

        None as well when ``$WATCHDOG_PID`` names another process, or a value is not a
        positive integer (sd_watchdog_enabled(3)).
        """
        if not self._watchdog_usec:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000


# --------------------------------------------------------------------------- status line


def format_duration(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from one hour on (whole seconds, rounded down)."""
    total = max(0, int(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fps(value: Any) -> str:
    try:
        return f"{float(value):.1f} fps"
    except (TypeError, ValueError):
        return "? fps"


def format_status(health: Mapping[str, Any]) -> str:
    """The one-line ``STATUS=`` text for ``systemctl status``, from ``daemon.health()``.

    Example: ``camera ok 30.0 fps, pose 29.8 fps, 2 viewers, recording "Session 3" 00:42``.
    Missing keys are left out rather than raising: a partial health dict still gives a line.
    """
    parts: list[str] = []
    cap = health.get("capture")
    if isinstance(cap, Mapping):
        state = cap.get("state")
        error = cap.get("error")
        if state == "running":
            parts.append(f"camera ok {_fps(cap.get('fps'))}")
        elif state == "connecting":
            parts.append(f"camera connecting to {redact_url(str(cap.get('source') or '?'))}")
        elif state == "lost":
            lost = f"camera lost: {redact_url(str(error))}" if error else "camera lost"
            if cap.get("reconnects"):
                lost += f", reconnecting (attempt {cap.get('reconnects')})"
            parts.append(lost)
        else:
            parts.append(f"camera {state or 'unknown'}")
    pose = health.get("pose")
    if isinstance(pose, Mapping):
        parts.append(f"pose {_fps(pose.get('fps'))}")
    viewers = health.get("viewers")
    if isinstance(viewers, int):
        parts.append(f"{viewers} viewer" + ("" if viewers == 1 else "s"))
    rec = health.get("recording")
    if isinstance(rec, Mapping):
        if rec.get("state") == "recording":
            name = rec.get("name")
            if not name and rec.get("session_id") is not None:
                name = f"session {rec.get('session_id')}"
            label = f' "{name}"' if name else ""
            parts.append(f"recording{label} {format_duration(float(rec.get('elapsed_s') or 0))}")
        else:
            parts.append("idle")
    gpio = health.get("gpio")
    if isinstance(gpio, Mapping) and gpio.get("state") == "error":
        parts.append("button error")
    return ", ".join(parts) if parts else "starting"


# --------------------------------------------------------------------------- supervision


async def supervise(daemon: Any, notifier: Notifier, interval_s: float | None = None) -> None:
    """Ping the watchdog while the pipeline is alive and keep ``STATUS=`` current; forever.

    Every ``interval_s`` seconds (default: :meth:`Notifier.watchdog_interval`, else 5 s):
    send ``STATUS=`` built by :func:`format_status` from ``daemon.health()`` and, only if
    ``daemon.pipeline_alive()`` is True, ``WATCHDOG=1``. A pipeline that stays dead for
    ``WatchdogSec=`` gets the daemon restarted by systemd. An exception from the daemon's
    health calls counts as "not alive" (logged) and does not end the loop. Cancel the task
    to stop it.

    Raises:
        ValueError: ``interval_s`` is not positive.
    """
    if interval_s is None:
        interval_s = notifier.watchdog_interval() or DEFAULT_SUPERVISE_INTERVAL_S
    if interval_s <= 0:
        raise ValueError(f"supervise interval must be > 0 s (got {interval_s})")
    was_alive: bool | None = None
    last_status: str | None = None
    while True:
        try:
            alive = bool(daemon.pipeline_alive())
        except Exception:
            log.exception("pipeline_alive() failed; withholding the watchdog")
            alive = False
        try:
            text = format_status(daemon.health())
        except Exception as exc:
            log.exception("health() failed")
            text = f"health check failed: {exc}"
        if alive:
            notifier.watchdog()
        if alive != was_alive:
            if alive:
                log.info(
                    "pipeline alive%s", "; watchdog pings resumed" if was_alive is False else ""
                )
            else:
                log.warning("pipeline not alive (%s); watchdog withheld", text)
            was_alive = alive
        if text != last_status:
            notifier.status(text)
            last_status = text
        await asyncio.sleep(interval_s)


# --------------------------------------------------------------------------- logging

#: Attributes every ``logging.LogRecord`` has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
#: Journal field names set by JournalHandler itself or by journald (systemd.journal-fields(7)).
_RESERVED_FIELDS = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "LOGGER",
        "THREAD_NAME",
        "PROCESS_NAME",
        "SYSLOG_IDENTIFIER",
    }
)


def _journal_name(key: str) -> str | None:
    """``session_id`` → ``SESSION_ID``; None if not a valid journal field name.

    Journal field names are upper-case ASCII letters, digits and underscores, not starting
    with an underscore or a digit, at most 64 characters (sd_journal_print(3)).
    """
    name = key.upper()
    if not name or len(name) > 64 or name[0] == "_" or name[0].isdigit():
        return None
    if not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
        return None
    if name in _RESERVED_FIELDS:
        return None
    return name


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _RECORD_ATTRS and not k.isupper() and k != "journal_fields"
    }


class JournalFieldsFilter(logging.Filter):
    """Turns ``extra=`` keys into journal fields: ``extra={"session_id": 3}`` → ``SESSION_ID=3``.

    journald drops fields whose names are not upper case, and ``JournalHandler`` sends every
    record attribute, so the lower-case names callers use are copied to upper-case
    attributes. Also sets ``record.journal_fields`` (``"session_id=3 camera=..."``) for plain
    text formatters. Never rejects a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        extras = _extra_fields(record)
        for key, value in extras.items():
            name = _journal_name(key)
            if name is not None and not hasattr(record, name):
                setattr(record, name, value)
        record.journal_fields = " ".join(f"{k}={v}" for k, v in extras.items())
        return True


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "journal_fields", "")
        return f"{text} [{fields}]" if fields else text


class _Bound(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bind(logger: logging.Logger, **fields: Any) -> logging.LoggerAdapter:
    """A logger that adds ``fields`` to every record, e.g. ``bind(log, session_id=3)``.

    Fields given per call with ``extra=`` win over bound ones.
    """
    return _Bound(logger, fields)


def running_under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when started by systemd (``$JOURNAL_STREAM`` or ``$INVOCATION_ID`` is set)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup_logging(level: int | str = "info", *, environ: Mapping[str, str] | None = None) -> str:
    """Configure the root logger; returns ``"journal"`` or ``"stderr"``.

    Under systemd with systemd-python importable, records go to journald through
    ``systemd.journal.JournalHandler`` (``SYSLOG_IDENTIFIER=climbd``) with structured fields
    from ``extra=``; otherwise to stderr as text. Replaces handlers installed earlier, so
    calling it twice does not duplicate lines.

    Raises:
        ValueError: ``level`` is not a logging level name or number.
    """
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
    else:
        numeric = level
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_climbd", False):
            root.removeHandler(h)
            h.close()
    handler: logging.Handler
    if _sd_journal is not None and running_under_systemd(environ):
        handler = _sd_journal.JournalHandler(SYSLOG_IDENTIFIER="climbd")
        handler.setFormatter(logging.Formatter("%(message)s"))
        kind = "journal"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        kind = "stderr"
    handler.addFilter(JournalFieldsFilter())
    handler.addFilter(RedactingFilter())  # camera credentials never reach a log line
    handler._climbd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    return kind
