"""The export worker process: ``python -m climbd.export.worker`` (see
:mod:`climbd.export.jobs` for the protocol).

It lowers its own CPU and I/O priority *first*, before importing numpy, OpenCV or PyAV, so
every thread those libraries start inherits the low priority. Stdin EOF or SIGTERM cancel
the job (its partial file is removed). Exit codes: 0 done, 1 failed, 3 cancelled, 2 bad
input.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["lower_priority", "main"]

# ioprio_set(2) syscall numbers; IOPRIO_CLASS_IDLE = 3, IOPRIO_WHO_PROCESS = 1.
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "armv6l": 314, "i686": 289}


def lower_priority(nice: int, idle: bool) -> dict[str, Any]:
    """Give this process (and the threads it will start) the lowest priority asked for.

    Args:
        nice: absolute nice value (0..19).
        idle: also ``SCHED_IDLE`` (CPU only when nothing else wants it), the idle I/O class
            (ignored where the kernel's I/O scheduler has no classes) and, on a machine with
            several CPUs, only the last CPU: the live pipeline always keeps the other cores
            (their caches included) to itself, and the export's codecs run one thread.

    Returns:
        What was applied: ``{"nice": int, "sched": "idle"|"other", "io": "idle"|None,
        "cpus": [cpu, ...]}``.
    """
    applied: dict[str, Any] = {"nice": None, "sched": "other", "io": None, "cpus": None}
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), nice))
        applied["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        pass
    if idle and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            applied["sched"] = "idle"
        except OSError:
            pass
    if idle and hasattr(os, "sched_setaffinity"):
        try:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) > 1:
                os.sched_setaffinity(0, {cpus[-1]})
            applied["cpus"] = sorted(os.sched_getaffinity(0))
        except OSError:
            pass
    nr = _IOPRIO_SET.get(platform.machine())
    if idle and nr is not None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syscall(nr, 1, 0, 3 << 13) == 0:
                applied["io"] = "idle"
        except (OSError, AttributeError):
            pass
    return applied


class _Emitter:
    """JSON lines on stdout; progress at most every 0.1 s."""

    def __init__(self) -> None:
        self._last = 0.0
        self.broken = False

    def send(self, event: dict[str, Any]) -> None:
        try:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            self.broken = True  # the manager is gone: stop at the next check

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.1 or (total and done >= total):
            self._last = now
            self.send({"event": "progress", "done": done, "total": total})


def main() -> int:
    """Read a job spec from stdin, run it, report on stdout."""
    line = sys.stdin.readline()
    try:
        raw = json.loads(line)
    except ValueError:
        if not line:
            return 3  # cancelled before the job was sent
        print(json.dumps({"event": "error", "error": "ExportError",
                          "message": "bad job spec"}), flush=True)
        return 2
    priority = lower_priority(int(raw.get("nice", 19)), bool(raw.get("idle_priority", True)))
    cancel = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the manager closed our stdin (cancel) or died
        cancel.set()

    threading.Thread(target=watch_stdin, name="export-cancel", daemon=True).start()
    # SIGTERM (e.g. systemd stopping the daemon's control group) cancels cleanly too: the
    # job stops at the next frame and removes its partial file.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: cancel.set())
    out = _Emitter()
    out.send({"event": "started", "pid": os.getpid(), "priority": priority})

    from climbd.errors import ClimbdError
    from climbd.export.common import ExportCancelled
    from climbd.export.jobs import JobSpec, run_job

    try:
        spec = JobSpec(**raw)
        result = run_job(spec, out.progress, lambda: cancel.is_set() or out.broken)
    except ExportCancelled:
        out.send({"event": "cancelled"})
        return 3
    except ClimbdError as exc:
        out.send({"event": "error", "error": type(exc).__name__, "message": str(exc)})
        return 1
    except Exception as exc:  # a bug: report it, never leave the manager waiting
        out.send({"event": "error", "error": "InternalError",
                  "message": f"{type(exc).__name__}: {exc}"})
        return 1
    out.send({"event": "done", "result": result.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
