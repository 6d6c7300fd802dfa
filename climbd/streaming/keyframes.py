"""Rate-limited keyframe requests shared by every viewer.

A new viewer must start decoding at an IDR, and a browser that lost packets asks for one with
RTCP PLI or FIR (RFC 4585 §6.3.1, RFC 5104 §3.5.1). There is one encoder for all viewers *and*
the recorder, so each forced IDR costs bits in every stream and in the recording. The
:class:`KeyframeGovernor` coalesces requests:

- a request made while another one is pending, or while a forced IDR is on its way out of
  the encoder, joins it;
- a pending request is satisfied by the next keyframe that leaves the encoder, natural (the
  GOP, ``video.keyframe_interval_s``) or forced;
- at most one IDR is forced per ``min_interval_s`` (default 1 s), and none is forced when a
  natural keyframe is due within ``natural_slack_s`` anyway.

So however many viewers join or lose packets, the recording gets at most one extra IDR per
second on top of its GOP, and a viewer waits at most ``min_interval_s`` for a picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["KeyframeGovernor"]

log = logging.getLogger(__name__)


class KeyframeGovernor:
    """Turns many keyframe wishes into few forced IDRs.

    Args:
        force: asks the encoder for an IDR (``Daemon.request_keyframe``); thread-safe.
        gop_s: the encoder's natural keyframe interval, seconds (0 = unknown).
        min_interval_s: least time between two forced IDRs, seconds.
        natural_slack_s: skip forcing when the next natural keyframe is due this soon, seconds.
        clock: monotonic clock, seconds (tests pass a fake).

    Must be used on the event loop's thread.
    """

    def __init__(
        self,
        force: Callable[[], None],
        gop_s: float = 0.0,
        min_interval_s: float = 1.0,
        natural_slack_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._force = force
        self._gop_s = gop_s
        self._min_interval_s = min_interval_s
        self._slack_s = natural_slack_s
        self._clock = clock
        self._last_forced = -float("inf")
        self._last_keyframe = -float("inf")
        self._pending_since: float | None = None
        self._awaiting = False  # an IDR was forced and has not come out yet
        self._timer: asyncio.TimerHandle | None = None
        #: counters for health and tests
        self.requests = 0
        self.forced = 0
        self.reasons: dict[str, int] = {}

    @property
    def pending(self) -> bool:
        """True while a request waits for a keyframe (deferred, or forced and on its way)."""
        return self._pending_since is not None or self._awaiting

    def request(self, reason: str = "viewer") -> None:
        """Ask for a keyframe soon (``reason`` is counted: "join", "pli", "fir", "resync")."""
        self.requests += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self._pending_since is not None:
            return
        now = self._clock()
        if self._awaiting and now - self._last_forced < self._min_interval_s:
            return  # the IDR forced a moment ago serves this request too
        self._pending_since = now
        delay = max(0.0, self._last_forced + self._min_interval_s - now)
        if self._gop_s > 0:
            natural_in = self._last_keyframe + self._gop_s - now
            if 0 <= natural_in <= max(delay, self._slack_s):
                # a natural keyframe comes first: wait for it, force only if it does not come
                delay = natural_in + self._slack_s
        if delay <= 0:
            self._fire()
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def saw_keyframe(self) -> None:
        """Report that a keyframe left the encoder (satisfies a pending request)."""
        now = self._clock()
        self._last_keyframe = now
        self._awaiting = False
        if self._pending_since is not None and now >= self._pending_since:
            self._pending_since = None
            self._cancel_timer()

    def _fire(self) -> None:
        self._timer = None
        if self._pending_since is None:
            return
        self._pending_since = None
        self._awaiting = True
        self._last_forced = self._clock()
        self.forced += 1
        log.debug("forcing a keyframe (%d requests so far)", self.requests)
        self._force()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Drop any pending request."""
        self._pending_since = None
        self._awaiting = False
        self._cancel_timer()

    def stats(self) -> dict[str, object]:
        """Counters as a JSON-ready dict."""
        return {"requests": self.requests, "forced": self.forced, "reasons": dict(self.reasons)}
