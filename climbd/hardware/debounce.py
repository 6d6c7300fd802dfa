"""The debounce and press-classification state machine of one button (pure: no threads,
no timers, no clock of its own — every time is passed in, in nanoseconds of the edge
events' clock, ``CLOCK_MONOTONIC``).

The driver (:class:`climbd.hardware.gpio.GpioButtons`) feeds it three kinds of input and
carries out the :class:`Effects` it returns:

- :meth:`Debouncer.edge`: an edge event (``active`` = pressed, its ``timestamp_ns``). An
  edge closer than ``debounce_ns`` to the last *accepted* edge is contact bounce and
  ignored.
- :meth:`Debouncer.settle`: the debounce window after an accepted edge has closed and the
  line reads ``level``; if the bounce ended in the other state, that state is taken (a
  glitch never leaves a button "held"; a lost edge is made up for).
- :meth:`Debouncer.long_due`: ``long_press_ns`` have passed since the press at ``press_ns``.

Press classification: released before ``long_press_ns`` → ``"short"``; held for
``long_press_ns`` → ``"long"``, at the threshold, without waiting for the release. A
release read late is still classified by the events' own timestamps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Debouncer", "Effects", "PressKind"]

log = logging.getLogger(__name__)

PressKind = Literal["short", "long"]


@dataclass
class Effects:
    """What the driver must do after one input.

    Attributes:
        fire: presses to act on, in order.
        cancel_long: cancel the pending long-press timer (applied before ``long_after_s``).
        long_after_s: (re)arm the long-press timer: call :meth:`Debouncer.long_due` with
            the current ``press_ns`` after this many seconds.
        settle_after_s: (re)arm the settle timer: call :meth:`Debouncer.settle` after this
            many seconds (the debounce window).
    """

    fire: list[PressKind] = field(default_factory=list)
    cancel_long: bool = False
    long_after_s: float | None = None
    settle_after_s: float | None = None


@dataclass
class Debouncer:
    """One button's state (see the module docstring).

    Args:
        debounce_ns: the debounce window (0 = none: every edge is confirmed at once).
        long_press_ns: how long a press must be held to be a long press.
        label: the button's name, for log lines.
    """

    debounce_ns: int
    long_press_ns: int
    label: str = ""
    pressed: bool = False
    last_edge_ns: int | None = None  # timestamp of the last accepted edge
    press_ns: int | None = None  # timestamp of the accepted press edge of the current press
    release_ns: int | None = None  # timestamp of a release edge not yet confirmed
    confirmed: bool = False  # the current press outlasted the debounce window
    long_fired: bool = False
    bounces: int = 0

    def held_at_start(self, level: bool) -> None:
        """The line's level when the lines were requested: a button held then (or wired
        the wrong way round) gives no press until it is released."""
        self.pressed = level
        if level:
            self.long_fired = True
            self.confirmed = True

    def edge(self, active: bool, ts: int, now: int) -> Effects:
        """An edge event at ``ts`` (``now`` = the clock when it is handled)."""
        fx = Effects()
        if self.last_edge_ns is not None and ts - self.last_edge_ns < self.debounce_ns:
            self.bounces += 1
            return fx
        if active == self.pressed:
            return fx  # no change of state: an edge of a bounce whose partner was dropped
        self.last_edge_ns = ts
        if active:
            if self.release_ns is not None:
                # A release not yet confirmed turned out to be a glitch: still held.
                self.release_ns = None
                self.pressed = True
            else:
                self._begin_press(ts, now, fx)
        else:
            self.pressed = False
            self.release_ns = ts
        if self.debounce_ns > 0:
            fx.settle_after_s = self.debounce_ns / 1e9
        else:
            self._confirm(now, fx)
        return fx

    def settle(self, level: bool, now: int) -> Effects:
        """The debounce window closed and the line reads ``level``: confirm or undo the
        last accepted edge."""
        fx = Effects()
        if level == self.pressed:
            self._confirm(now, fx)
        elif self.pressed and not self.confirmed:
            # A press shorter than the debounce window: noise, not a press.
            log.debug("gpio button %s: glitch ignored", self.label)
            self.bounces += 1
            self.pressed = False
            self.press_ns = None
            fx.cancel_long = True
        elif self.pressed:
            # Released, but the release edge was lost: release now.
            self.pressed = False
            self.release_ns = now
            self._confirm(now, fx)
        elif self.release_ns is not None:
            # A release shorter than the debounce window while held: still held.
            self.bounces += 1
            self.pressed = True
            self.release_ns = None
            self._confirm(now, fx)
        else:
            # Pressed, but the press edge was lost (or bounced away): press now.
            self._begin_press(now, now, fx)
            self._confirm(now, fx)
        return fx

    def long_due(self, press_ns: int) -> Effects:
        """The long-press threshold of the press at ``press_ns`` has passed (call after any
        queued edges were fed: a release read late must win over the threshold)."""
        fx = Effects()
        if (self.press_ns == press_ns and self.pressed and self.confirmed
                and self.release_ns is None and not self.long_fired):
            self.long_fired = True
            fx.fire.append("long")
        # Otherwise the pending confirmation (settle) classifies the press.
        return fx

    def _begin_press(self, ts: int, now: int, fx: Effects) -> None:
        self.pressed = True
        self.press_ns = ts
        self.release_ns = None
        self.confirmed = False
        self.long_fired = False
        held_s = max(0.0, (now - ts) / 1e9)
        fx.cancel_long = True
        fx.long_after_s = max(0.0, self.long_press_ns / 1e9 - held_s)

    def _confirm(self, now: int, fx: Effects) -> None:
        """The state has been stable for the debounce window: act on it."""
        if self.pressed:
            self.confirmed = True
            if (self.press_ns is not None and not self.long_fired
                    and now - self.press_ns >= self.long_press_ns):
                self.long_fired = True
                fx.fire.append("long")
            return
        if self.release_ns is None:
            return
        release_ns, self.release_ns = self.release_ns, None
        press_ns, self.press_ns = self.press_ns, None
        fx.cancel_long = True
        fx.long_after_s = None
        if self.long_fired or press_ns is None:
            return  # the long press already fired at the threshold (or held since start-up)
        # Classified by the events' own timestamps, so a release read late is still short.
        fx.fire.append("long" if release_ns - press_ns >= self.long_press_ns else "short")
