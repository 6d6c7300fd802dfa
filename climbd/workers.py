"""The daemon's side of its worker processes (exports, pose backfill).

A worker (``python -m climbd.export.worker``, ``python -m climbd.backfill.worker``) reads one
JSON job line on stdin and answers with JSON event lines on stdout; stdin EOF (or SIGTERM)
asks it to stop at the next frame. These helpers hold what both callers do the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)


async def events(stdout: asyncio.StreamReader, what: str) -> AsyncIterator[dict[str, Any]]:
    """The worker's JSON event objects, in order, until its stdout closes. A line that is
    not a JSON object is logged (as ``what`` said it, first 200 bytes) and skipped."""
    async for line in stdout:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            log.warning("%s said %r", what, line[:200])
            continue
        yield event


async def stop(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """Ask ``proc`` to stop (close its stdin), wait up to ``grace_s`` seconds, then kill it;
    returns once it has exited. Safe to call on a process that already exited."""
    if proc.returncode is None and proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
