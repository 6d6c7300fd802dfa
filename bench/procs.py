"""Child processes of the benchmarks (a ``climbd run`` daemon, a server)."""

from __future__ import annotations

import subprocess
from typing import IO, Any


def stop_process(proc: subprocess.Popen[Any], log: IO[Any] | None = None,
                 timeout: float = 30.0) -> int | None:
    """SIGTERM ``proc``, wait up to ``timeout`` s, SIGKILL it if it is still running, then
    close its ``log`` file. Returns its exit code (None if it had to be killed and did not
    exit either)."""
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            return None
    finally:
        if log is not None:
            log.close()
