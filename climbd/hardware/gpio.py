"""Push buttons and a recording LED on GPIO lines, through libgpiod v2.

A button is a line requested as an input with edge detection on both edges, a pull-up bias
and ``active_low`` (a button that connects the line to ground reads *active* while pressed), so
a press is a ``RISING_EDGE`` event and a release a ``FALLING_EDGE`` event in libgpiod's logical
terms. Edge events are read on the asyncio loop: ``loop.add_reader(request.fd, ...)`` and
``request.read_edge_events()`` (libgpiod v2 Python bindings, ``gpiod.LineRequest``; see
https://libgpiod.readthedocs.io/en/latest/python_line_request.html).

Debounce is done twice:

- the kernel is asked for ``debounce_period`` (gpiolib-cdev, uAPI v2,
  ``GPIO_V2_LINE_ATTR_ID_DEBOUNCE``); if the request with a debounce period fails it is made
  again without one;
- in software: an edge closer than ``debounce_ms`` to the last *accepted* edge of the same line,
  measured with the events' own ``timestamp_ns`` (``CLOCK_MONOTONIC`` — libgpiod's default
  ``event_clock`` — the clock of :func:`time.monotonic_ns`), is contact bounce and ignored. When
  the window after an accepted edge closes, the line's level is read back and, if the bounce
  ended in the other state, that state is taken (a glitch never leaves a button "held").

Press classification: released before ``long_press_s`` → the button's ``short_press`` action;
held for ``long_press_s`` → its ``long_press`` action fires at the threshold, without waiting
for the release. Actions: ``toggle_recording``, ``start_recording``, ``stop_recording``,
``save_last`` (keeps the last ``save_last_s`` seconds, default ``recording.pre_roll_s``), or
``none``. They run one after another on a worker task; a refused action
(:class:`~climbd.errors.RecordingError`) is logged, never raised.

A missing chip, a missing line or a busy line is logged as an error and reported by
:meth:`GpioButtons.health` as ``{"state": "error", "error": "..."}``; the daemon keeps running
without the buttons.

Three modules: libgpiod sits behind a small seam (:mod:`climbd.hardware.libgpiod`:
:class:`Chip` and :class:`LineRequest`; :func:`open_gpiod_chip` is the real one), so tests
drive :class:`GpioButtons` with a fake chip; the debounce and press classification is a pure
state machine (:mod:`climbd.hardware.debounce`, tested without threads or clocks); this
module drives both on the asyncio loop and runs the actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from climbd.config import ButtonConfig, GpioConfig
from climbd.errors import ClimbdError, GpioError
from climbd.hardware.debounce import Debouncer, Effects
from climbd.hardware.libgpiod import (
    DEBOUNCE_REFUSED,
    Chip,
    ChipOpener,
    EdgeEvent,
    GpiodChip,
    LineRequest,
    LineSpec,
    find_chip_paths,
    open_gpiod_chip,
)

__all__ = [
    "CONSUMER",
    "Chip",
    "EdgeEvent",
    "GpioButtons",
    "GpioError",
    "GpiodChip",
    "LineRequest",
    "LineSpec",
    "find_chip_paths",
    "open_gpiod_chip",
]

log = logging.getLogger(__name__)

#: Consumer label shown by ``gpioinfo`` next to the lines climbd holds.
CONSUMER = "climbd"
#: How often the LED is brought in line with ``recorder.recording`` (seconds); a
#: recording started from a tablet lights the LED within this time.
LED_POLL_S = 0.25

# --------------------------------------------------------------------------- buttons


@dataclass
class _Button:
    cfg: ButtonConfig
    offset: int
    label: str
    state: Debouncer
    long_timer: asyncio.TimerHandle | None = None
    settle_timer: asyncio.TimerHandle | None = None
    presses: int = 0
    long_presses: int = 0


@dataclass
class _Action:
    button: str
    kind: Literal["short", "long"]
    action: str
    seconds: float | None = None


@dataclass
class _LastAction:
    button: str
    action: str
    ok: bool
    error: str | None
    at: float = field(default_factory=time.time)


class GpioButtons:
    """Buttons and a recording LED, driven on the asyncio loop.

    Args:
        config: the ``[gpio]`` section.
        recorder: the recorder: ``start()``, ``stop()``, ``save_last(seconds)`` coroutines
            and a ``recording`` bool (:class:`climbd.recording.Recorder`).
        pre_roll_s: seconds ``save_last`` keeps when a button has no ``save_last_s``
            (``recording.pre_roll_s``).
        open_chip: the seam to libgpiod; tests pass a fake.
        chip_paths: candidate chips when ``config.chip`` is ``''`` (default: every
            ``/dev/gpiochip*``).
        clock_ns: the clock of the events' ``timestamp_ns`` (``CLOCK_MONOTONIC``).

    Run :meth:`run` as a background task; cancel it to release the lines.
    """

    def __init__(
        self,
        config: GpioConfig,
        recorder: Any,
        *,
        pre_roll_s: float = 0.0,
        open_chip: ChipOpener = open_gpiod_chip,
        chip_paths: Callable[[], list[str]] = find_chip_paths,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.pre_roll_s = float(pre_roll_s)
        self._open_chip = open_chip
        self._chip_paths = chip_paths
        self._clock_ns = clock_ns
        self._state = "disabled" if not config.enabled else "starting"
        self._error: str | None = None
        self._chip: Chip | None = None
        self._request: LineRequest | None = None
        self._buttons: dict[int, _Button] = {}
        self._led_offset: int | None = None
        self._led_on = False
        self._queue: asyncio.Queue[_Action] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_action: _LastAction | None = None
        self._kernel_debounce = config.debounce_ms > 0

    # ------------------------------------------------------------------ public

    def health(self) -> dict[str, Any]:
        """State for the daemon's health dict (under its ``"gpio"`` key).

        ``state`` is ``disabled``, ``starting``, ``running``, ``error`` or ``stopped``;
        ``error`` says what failed (chip or line missing, line busy, read error).
        """
        out: dict[str, Any] = {"state": self._state, "error": self._error}
        if self._chip is not None:
            out["chip"] = self._chip.path
        out["buttons"] = [
            {
                "label": b.label,
                "line": b.cfg.line,
                "offset": b.offset,
                "pressed": b.state.pressed,
                "presses": b.presses,
                "long_presses": b.long_presses,
                "bounces_ignored": b.state.bounces,
            }
            for b in self._buttons.values()
        ]
        out["led"] = None if self._led_offset is None else {"on": self._led_on}
        if self._last_action is not None:
            la = self._last_action
            out["last_action"] = {
                "button": la.button,
                "action": la.action,
                "ok": la.ok,
                "error": la.error,
                "at": la.at,
            }
        return out

    async def run(self) -> None:
        """Open the lines, then serve button edges and the LED until cancelled.

        Returns at once when GPIO is disabled or cannot be set up (state ``error``, logged);
        never raises :class:`GpioError`.
        """
        if not self.config.enabled:
            self._state = "disabled"
            return
        if not self.config.buttons and self.config.led.line == "":
            log.warning("gpio is enabled but no buttons and no led are configured")
        self._loop = asyncio.get_running_loop()
        try:
            self._setup()
        except GpioError as exc:
            self._fail(str(exc))
            return
        assert self._request is not None
        self._loop.add_reader(self._request.fd, self._on_readable)
        self._state = "running"
        log.info(
            "gpio ready on %s: %s%s",
            self._chip.path if self._chip else "?",
            ", ".join(f"{b.label} (line {b.offset})" for b in self._buttons.values())
            or "no button",
            f", led on line {self._led_offset}" if self._led_offset is not None else "",
        )
        worker = asyncio.create_task(self._worker(), name="gpio-actions")
        try:
            while True:
                self._sync_led()
                await asyncio.sleep(LED_POLL_S)
        finally:
            worker.cancel()
            self._teardown()
            if self._state == "running":
                self._state = "stopped"

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        chip, offsets, led = self._open_and_resolve()
        self._chip = chip
        cfg = self.config
        specs: dict[int, LineSpec] = {}
        for bcfg, offset in zip(cfg.buttons, offsets, strict=True):
            if offset in specs:
                chip.close()
                raise GpioError(f"GPIO line {bcfg.line!r} (offset {offset}) is configured twice")
            specs[offset] = LineSpec(
                direction="input",
                active_low=bcfg.active_low,
                bias=bcfg.bias,
                edge_detection=True,
                debounce_ms=cfg.debounce_ms,
            )
            label = bcfg.label or str(bcfg.line)
            self._buttons[offset] = _Button(
                cfg=bcfg, offset=offset, label=label,
                state=Debouncer(int(self.config.debounce_ms * 1e6),
                                int(self.config.long_press_s * 1e9), label))
        if led is not None:
            if led in specs:
                chip.close()
                raise GpioError(f"LED line {cfg.led.line!r} is also a button line")
            specs[led] = LineSpec(direction="output", active_low=cfg.led.active_low)
            self._led_offset = led
        try:
            self._request = chip.request_lines(specs, CONSUMER)
        except GpioError as exc:
            if not self._kernel_debounce or exc.errno not in DEBOUNCE_REFUSED:
                chip.close()
                raise
            # Not every kernel/chip accepts a debounce period; the software debounce below
            # does the job alone.
            log.warning("gpio request with kernel debounce failed (%s); retrying without", exc)
            self._kernel_debounce = False
            specs = {
                o: LineSpec(
                    s.direction, s.active_low, s.bias, s.edge_detection, 0.0, s.output_value
                )
                for o, s in specs.items()
            }
            try:
                self._request = chip.request_lines(specs, CONSUMER)
            except GpioError:
                chip.close()
                raise
        for b in self._buttons.values():
            b.state.held_at_start(self._request.get_value(b.offset))
            if b.state.pressed:
                # Held at start-up (or wired the wrong way round): no press until released.
                log.warning("gpio button %s reads pressed at start; check active_low/bias", b.label)

    def _open_and_resolve(self) -> tuple[Chip, list[int], int | None]:
        cfg = self.config
        lines: list[str | int] = [b.line for b in cfg.buttons]
        has_led = cfg.led.line != ""
        if has_led:
            lines.append(cfg.led.line)
        candidates = [cfg.chip] if cfg.chip else self._chip_paths()
        if not candidates:
            raise GpioError("no GPIO chip found (/dev/gpiochip* is missing)")
        if not cfg.chip and any(isinstance(line, int) for line in lines):
            raise GpioError("gpio.chip must be set when lines are given by offset")
        errors: list[str] = []
        for path in candidates:
            try:
                chip = self._open_chip(path)
            except GpioError as exc:
                errors.append(str(exc))
                continue
            try:
                offsets = [chip.line_offset_from_id(line) for line in lines]
            except GpioError as exc:
                chip.close()
                errors.append(str(exc))
                continue
            led = offsets.pop() if has_led else None
            return chip, offsets, led
        if len(candidates) == 1:
            raise GpioError(errors[0])
        raise GpioError(
            f"no GPIO chip among {', '.join(candidates)} has all of lines {lines!r}: "
            + "; ".join(errors)
        )

    def _teardown(self) -> None:
        for b in self._buttons.values():
            for t in (b.long_timer, b.settle_timer):
                if t is not None:
                    t.cancel()
        if self._request is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._request.fd)
            if self._led_offset is not None:
                with contextlib.suppress(OSError, GpioError):
                    self._request.set_value(self._led_offset, False)
            with contextlib.suppress(OSError):
                self._request.release()
            self._request = None
        if self._chip is not None:
            self._chip.close()

    def _fail(self, message: str) -> None:
        self._state = "error"
        self._error = message
        log.error("gpio disabled: %s", message)

    # ------------------------------------------------------------------ edges

    def _on_readable(self) -> None:
        if self._request is None:
            return
        try:
            events = self._request.read_edge_events()
        except OSError as exc:
            assert self._loop is not None
            self._loop.remove_reader(self._request.fd)
            self._fail(f"reading GPIO edge events failed: {exc.strerror or exc}")
            return
        for event in events:
            self._on_edge(event)

    def _drain(self) -> None:
        """Handle edge events already queued in the kernel, without blocking."""
        if self._request is None:
            return
        try:
            pending = self._request.wait_edge_events(0)
        except OSError:
            return
        if pending:
            self._on_readable()

    def _on_edge(self, event: EdgeEvent) -> None:
        button = self._buttons.get(event.line_offset)
        if button is None:
            return
        active = event.event_type.name == "RISING_EDGE"
        self._apply(button, button.state.edge(active, int(event.timestamp_ns), self._clock_ns()))

    def _apply(self, button: _Button, fx: Effects) -> None:
        """Carry out what the button's state machine asked for: timers, then presses."""
        assert self._loop is not None
        if fx.cancel_long and button.long_timer is not None:
            button.long_timer.cancel()
            button.long_timer = None
        if fx.long_after_s is not None:
            press_ns = button.state.press_ns
            assert press_ns is not None
            button.long_timer = self._loop.call_later(
                fx.long_after_s, self._long_press_due, button, press_ns)
        if fx.settle_after_s is not None:
            if button.settle_timer is not None:
                button.settle_timer.cancel()
            button.settle_timer = self._loop.call_later(
                fx.settle_after_s, self._settle, button)
        for kind in fx.fire:
            self._fire(button, kind)

    def _settle(self, button: _Button) -> None:
        """After the debounce window: read the line and confirm or undo the last edge."""
        button.settle_timer = None
        self._drain()
        if self._request is None or button.settle_timer is not None:
            return  # a newer edge was accepted while draining; its own window decides
        try:
            level = self._request.get_value(button.offset)
        except OSError:
            level = button.state.pressed
        self._apply(button, button.state.settle(level, self._clock_ns()))

    def _long_press_due(self, button: _Button, press_ns: int) -> None:
        button.long_timer = None
        self._drain()  # a release read late must win over the threshold
        self._apply(button, button.state.long_due(press_ns))

    def _fire(self, button: _Button, kind: Literal["short", "long"]) -> None:
        cfg = button.cfg
        action = cfg.short_press if kind == "short" else cfg.long_press
        if kind == "short":
            button.presses += 1
        else:
            button.long_presses += 1
        log.info(
            "gpio button %s: %s press -> %s",
            button.label,
            kind,
            action,
            extra={"button": button.label},
        )
        if action != "none":
            self._queue.put_nowait(_Action(button.label, kind, action, cfg.save_last_s))

    # ------------------------------------------------------------------ actions

    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._execute(item)
                self._last_action = _LastAction(item.button, item.action, True, None)
            except ClimbdError as exc:
                # e.g. AlreadyRecording / NotRecording / NoMediaYet: a refusal, not a fault.
                log.warning(
                    "gpio button %s: %s refused: %s",
                    item.button,
                    item.action,
                    exc,
                    extra={"button": item.button},
                )
                self._last_action = _LastAction(item.button, item.action, False, str(exc))
            except Exception as exc:
                log.exception(
                    "gpio button %s: %s failed",
                    item.button,
                    item.action,
                    extra={"button": item.button},
                )
                self._last_action = _LastAction(item.button, item.action, False, repr(exc))
            finally:
                self._sync_led()

    async def _execute(self, item: _Action) -> None:
        recorder = self.recorder
        if item.action == "toggle_recording":
            if recorder.recording:
                await recorder.stop()
            else:
                await recorder.start()
        elif item.action == "start_recording":
            await recorder.start()
        elif item.action == "stop_recording":
            await recorder.stop()
        elif item.action == "save_last":
            seconds = item.seconds
            if seconds is None:
                seconds = self.pre_roll_s
            await recorder.save_last(seconds)
        else:  # pragma: no cover - the config only allows the actions above
            raise ValueError(f"unknown gpio action {item.action!r}")

    def _sync_led(self) -> None:
        if self._led_offset is None or self._request is None:
            return
        try:
            want = bool(self.recorder.recording)
        except Exception:  # the recorder is the daemon's; never let the LED kill the task
            return
        if want == self._led_on:
            return
        try:
            self._request.set_value(self._led_offset, want)
        except OSError as exc:
            log.warning("gpio led: %s", exc.strerror or exc)
            return
        self._led_on = want
