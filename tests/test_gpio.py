"""Buttons and the recording LED (climbd.hardware.gpio).

Most tests use :class:`FakeChip`, which behaves like a libgpiod v2 chip at the seam climbd
uses: edge events carry ``event_type`` (``RISING_EDGE`` = line became active),
``timestamp_ns`` on ``CLOCK_MONOTONIC`` and ``line_offset``; they are delivered through a real
pipe, so the request's ``fd`` works with ``loop.add_reader`` exactly as a line request's fd
does. Contact bounce is a burst of edges a millisecond apart. The last test drives the same
code through the real libgpiod against the kernel's gpio-sim where the machine offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from climbd.config import ButtonConfig, Config, GpioConfig, LedConfig, parse_config
from climbd.errors import AlreadyRecording, ConfigError, NotRecording
from climbd.hardware.gpio import GpioButtons, GpioError, LineSpec

pytestmark = [pytest.mark.unit, pytest.mark.timing]  # wall-clock rates and delays

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MS = 1_000_000  # nanoseconds


# --------------------------------------------------------------------------- fakes


class EventType(enum.Enum):
    """Same member names as ``gpiod.EdgeEvent.Type``."""

    RISING_EDGE = 1
    FALLING_EDGE = 2


@dataclass(frozen=True)
class FakeEdgeEvent:
    event_type: EventType
    timestamp_ns: int
    line_offset: int


class FakeRequest:
    """A line request: events wait in a queue, one byte per event in a pipe wakes readers."""

    def __init__(self, chip: FakeChip, config: dict[int, LineSpec]) -> None:
        self.chip = chip
        self.config = config
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._events: deque[FakeEdgeEvent] = deque()
        self.released = False

    @property
    def fd(self) -> int:
        return self._r

    def push(self, event: FakeEdgeEvent) -> None:
        self._events.append(event)
        os.write(self._w, b"e")

    def read_edge_events(self) -> list[FakeEdgeEvent]:
        # libgpiod blocks until at least one event; the fd is readable when this is called.
        select.select([self._r], [], [], 5)
        n = len(os.read(self._r, 4096))
        return [self._events.popleft() for _ in range(n)]

    def wait_edge_events(self, timeout: float) -> bool:
        return bool(select.select([self._r], [], [], timeout)[0])

    def get_value(self, offset: int) -> bool:
        return self.chip.levels[offset]

    def set_value(self, offset: int, value: bool) -> None:
        assert self.config[offset].direction == "output"
        self.chip.outputs[offset] = value

    def release(self) -> None:
        self.released = True
        os.close(self._r)
        os.close(self._w)


class FakeChip:
    """A GPIO chip with named lines; ``edge()`` simulates the button's contact."""

    def __init__(
        self,
        path: str = "/dev/gpiochip0",
        names: dict[str, int] | None = None,
        num_lines: int = 28,
        refuse_debounce: bool = False,
        busy: bool = False,
    ) -> None:
        self.path = path
        self.names = names if names is not None else {f"GPIO{i}": i for i in range(num_lines)}
        self.num_lines = num_lines
        self.refuse_debounce = refuse_debounce
        self.busy = busy
        self.levels: dict[int, bool] = {}
        self.outputs: dict[int, bool] = {}
        self.requests: list[dict[int, LineSpec]] = []
        self.request: FakeRequest | None = None
        self.closed = False

    def line_offset_from_id(self, line: str | int) -> int:
        if isinstance(line, str) and line in self.names:
            return self.names[line]
        try:
            offset = int(line)
        except ValueError:
            raise GpioError(f"GPIO line {line!r} not found on {self.path}") from None
        if not 0 <= offset < self.num_lines:
            raise GpioError(f"GPIO line {line!r} not found on {self.path}")
        return offset

    def request_lines(self, config: dict[int, LineSpec], consumer: str) -> FakeRequest:
        assert consumer == "climbd"
        self.requests.append(dict(config))
        if self.busy:
            raise GpioError("cannot request lines: Device or resource busy", errno.EBUSY)
        if self.refuse_debounce and any(s.debounce_ms > 0 for s in config.values()):
            raise GpioError("cannot request lines: Invalid argument", errno.EINVAL)
        for offset, spec in config.items():
            self.levels.setdefault(offset, False)
            if spec.direction == "output":
                self.outputs[offset] = spec.output_value
        self.request = FakeRequest(self, config)
        return self.request

    def close(self) -> None:
        self.closed = True

    # -- the physical side --------------------------------------------------------------

    def edge(self, offset: int, active: bool, ts_ns: int | None = None) -> None:
        """The contact of ``offset`` closes (active) or opens, at ``ts_ns`` (default: now)."""
        assert self.request is not None, "lines not requested yet"
        self.levels[offset] = active
        kind = EventType.RISING_EDGE if active else EventType.FALLING_EDGE
        ts = time.monotonic_ns() if ts_ns is None else ts_ns
        self.request.push(FakeEdgeEvent(kind, ts, offset))

    def bounce(self, offset: int, final: bool, edges: int = 5, step_ms: float = 1.0) -> None:
        """A contact that chatters: ``edges`` alternating edges ``step_ms`` apart, the last
        one leaving the line at ``final``."""
        t0 = time.monotonic_ns()
        for i in range(edges):
            level = final if (edges - 1 - i) % 2 == 0 else not final
            self.edge(offset, level, t0 + int(i * step_ms * MS))


class FakeRecorder:
    def __init__(self) -> None:
        self.recording = False
        self.calls: list[tuple[Any, ...]] = []

    async def start(self, name: str | None = None) -> None:
        if self.recording:
            raise AlreadyRecording("a recording is already running")
        self.recording = True
        self.calls.append(("start", name))

    async def stop(self) -> None:
        if not self.recording:
            raise NotRecording("nothing is recording")
        self.recording = False
        self.calls.append(("stop",))

    async def save_last(self, seconds: float) -> None:
        self.calls.append(("save_last", seconds))


class FakeDaemon:
    def __init__(self, pre_roll_s: float = 7.5) -> None:
        self.recorder = FakeRecorder()
        self.config = SimpleNamespace(recording=SimpleNamespace(pre_roll_s=pre_roll_s))


def buttons_for(config: GpioConfig, daemon: FakeDaemon, **kw: Any) -> GpioButtons:
    """GpioButtons over the fake daemon's recorder and pre-roll."""
    return GpioButtons(config, daemon.recorder,
                       pre_roll_s=daemon.config.recording.pre_roll_s, **kw)


def gpio_config(**kw: Any) -> GpioConfig:
    base: dict[str, Any] = {
        "enabled": True,
        "chip": "/dev/gpiochip0",
        "debounce_ms": 20,
        "long_press_s": 0.4,
        "buttons": [{"line": "GPIO17", "label": "big"}],
        "led": {"line": "GPIO27"},
    }
    base.update(kw)
    return GpioConfig.model_validate(base)


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(buttons: GpioButtons) -> Any:
    task = asyncio.create_task(buttons.run())
    try:
        await wait_for(lambda: buttons.health()["state"] in ("running", "error") or task.done())
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(config: GpioConfig, chip: FakeChip, daemon: FakeDaemon | None = None) -> GpioButtons:
    return buttons_for(config, daemon or FakeDaemon(), open_chip=lambda path: chip)


async def tap(chip: FakeChip, offset: int, hold_s: float) -> None:
    chip.bounce(offset, True)
    await asyncio.sleep(hold_s)
    chip.bounce(offset, False, edges=3)


# --------------------------------------------------------------------------- tests


async def test_short_press_toggles_recording_and_led() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(), chip, daemon)
    async with running(buttons):
        spec = chip.requests[0][17]
        assert (spec.direction, spec.bias, spec.active_low, spec.edge_detection) == (
            "input", "pull_up", True, True)
        assert spec.debounce_ms == 20
        assert chip.requests[0][27].direction == "output"
        assert chip.outputs[27] is False

        await tap(chip, 17, 0.1)
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])
        await wait_for(lambda: chip.outputs[27] is True)

        await tap(chip, 17, 0.1)
        await wait_for(lambda: daemon.recorder.calls == [("start", None), ("stop",)])
        await wait_for(lambda: chip.outputs[27] is False)
        await asyncio.sleep(0.1)
        h = buttons.health()
        assert h["state"] == "running"
        assert h["buttons"][0]["presses"] == 2
        assert h["buttons"][0]["long_presses"] == 0
        assert h["buttons"][0]["bounces_ignored"] > 0
    assert chip.request is not None and chip.request.released
    assert chip.closed


async def test_long_press_saves_pre_roll_at_the_threshold() -> None:
    chip, daemon = FakeChip(), FakeDaemon(pre_roll_s=7.5)
    buttons = make(gpio_config(long_press_s=0.3), chip, daemon)
    async with running(buttons):
        chip.bounce(17, True)
        t0 = time.monotonic()
        await wait_for(lambda: bool(daemon.recorder.calls))
        fired_after = time.monotonic() - t0
        # Fired while the button is still held, not at release.
        assert chip.levels[17] is True
        assert daemon.recorder.calls == [("save_last", 7.5)]
        assert 0.25 <= fired_after < 1.5
        await asyncio.sleep(0.2)
        chip.bounce(17, False)
        await asyncio.sleep(0.2)
        assert daemon.recorder.calls == [("save_last", 7.5)]  # no short press on release
        assert buttons.health()["buttons"][0]["long_presses"] == 1


async def test_save_last_seconds_from_button_config() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    cfg = gpio_config(buttons=[{"line": 17, "short_press": "save_last", "save_last_s": 20}])
    async with running(make(cfg, chip, daemon)):
        await tap(chip, 17, 0.05)
        await wait_for(lambda: daemon.recorder.calls == [("save_last", 20.0)])


async def test_chatter_gives_one_press() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(debounce_ms=30), chip, daemon)
    async with running(buttons):
        chip.bounce(17, True, edges=15, step_ms=1.5)
        await asyncio.sleep(0.12)
        chip.bounce(17, False, edges=11, step_ms=1.5)
        await asyncio.sleep(0.3)
        assert daemon.recorder.calls == [("start", None)]
        assert buttons.health()["buttons"][0]["presses"] == 1


async def test_glitch_shorter_than_debounce_is_not_a_press() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(debounce_ms=30), chip, daemon)
    async with running(buttons):
        chip.bounce(17, False, edges=2)  # active then inactive 1 ms later: a spike
        await asyncio.sleep(0.2)
        assert daemon.recorder.calls == []
        assert buttons.health()["buttons"][0]["pressed"] is False
        # The button still works afterwards.
        await tap(chip, 17, 0.08)
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])


async def test_release_glitch_while_held_does_not_end_the_press() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(debounce_ms=30, long_press_s=0.4), chip, daemon)
    async with running(buttons):
        chip.bounce(17, True)
        await asyncio.sleep(0.15)
        chip.bounce(17, True, edges=2)  # a 1 ms drop-out while held
        await wait_for(lambda: bool(daemon.recorder.calls))
        assert daemon.recorder.calls == [("save_last", 7.5)]


async def test_press_classified_by_event_timestamps_when_read_late() -> None:
    """A busy loop reads press and release together: their timestamps decide."""
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(long_press_s=1.0, debounce_ms=0), chip, daemon)
    async with running(buttons):
        now = time.monotonic_ns()
        chip.edge(17, True, now - 3000 * MS)
        chip.edge(17, False, now - 1500 * MS)  # held 1.5 s, 1.5 s ago
        await wait_for(lambda: bool(daemon.recorder.calls))
        await asyncio.sleep(0.1)
        assert daemon.recorder.calls == [("save_last", 7.5)]

        now = time.monotonic_ns()
        chip.edge(17, True, now - 900 * MS)
        chip.edge(17, False, now - 850 * MS)  # held 50 ms
        await wait_for(lambda: len(daemon.recorder.calls) == 2)
        assert daemon.recorder.calls[1] == ("start", None)


async def test_release_read_after_a_blocked_loop_is_classified_by_timestamps() -> None:
    """The long-press timer could not run (loop blocked); the release's timestamp says the
    button was held past the threshold, so it is a long press, not a short one."""
    chip, daemon = FakeChip(), FakeDaemon()
    buttons = make(gpio_config(long_press_s=1.0, debounce_ms=0), chip, daemon)
    async with running(buttons):
        chip.edge(17, True)
        await asyncio.sleep(0.05)  # the press is read; the 1 s timer is armed
        time.sleep(1.2)  # noqa: ASYNC251 - deliberately stalls the event loop
        chip.edge(17, False)
        await wait_for(lambda: bool(daemon.recorder.calls))
        await asyncio.sleep(0.1)
        assert daemon.recorder.calls == [("save_last", 7.5)]


async def test_refused_action_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    cfg = gpio_config(buttons=[{"line": 17, "short_press": "stop_recording"}])
    buttons = make(cfg, chip, daemon)
    async with running(buttons) as task:
        await tap(chip, 17, 0.05)
        await wait_for(lambda: "last_action" in buttons.health())
        last = buttons.health()["last_action"]
        assert (last["action"], last["ok"]) == ("stop_recording", False)
        assert "nothing is recording" in last["error"]
        assert not task.done()
        assert "refused" in caplog.text


async def test_led_follows_recording_started_elsewhere() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    async with running(make(gpio_config(buttons=[]), chip, daemon)):
        await daemon.recorder.start()  # e.g. from a tablet
        await wait_for(lambda: chip.outputs[27] is True, timeout=2)
        await daemon.recorder.stop()
        await wait_for(lambda: chip.outputs[27] is False, timeout=2)


async def test_led_active_low_and_off_at_exit() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    cfg = gpio_config(led={"line": 5, "active_low": True})
    async with running(make(cfg, chip, daemon)):
        assert chip.requests[0][5].active_low is True
        await daemon.recorder.start()
        await wait_for(lambda: chip.outputs[5] is True, timeout=2)
    assert chip.outputs[5] is False


async def test_held_at_start_is_not_a_press() -> None:
    chip, daemon = FakeChip(), FakeDaemon()
    chip.levels[17] = True  # stuck low / held while the daemon starts
    async with running(make(gpio_config(long_press_s=0.2), chip, daemon)):
        await asyncio.sleep(0.4)
        chip.bounce(17, False)
        await asyncio.sleep(0.2)
        assert daemon.recorder.calls == []
        await tap(chip, 17, 0.05)
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])


async def test_missing_chip_is_an_error_in_health_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_chip(path: str) -> FakeChip:
        raise GpioError(f"cannot open GPIO chip {path}: No such file or directory")

    buttons = buttons_for(gpio_config(chip="/dev/gpiochip9"), FakeDaemon(), open_chip=no_chip)
    await asyncio.wait_for(buttons.run(), 2)  # returns; does not raise
    h = buttons.health()
    assert h["state"] == "error"
    assert "/dev/gpiochip9" in h["error"]
    assert "gpio disabled" in caplog.text


async def test_real_libgpiod_on_missing_device_reports_error() -> None:
    pytest.importorskip("gpiod")
    buttons = buttons_for(gpio_config(chip="/dev/gpiochip-climbd-absent"), FakeDaemon())
    await asyncio.wait_for(buttons.run(), 2)
    h = buttons.health()
    assert h["state"] == "error"
    assert "cannot open GPIO chip /dev/gpiochip-climbd-absent" in h["error"]


async def test_missing_line_is_an_error_in_health() -> None:
    chip = FakeChip(names={"GPIO4": 4})
    buttons = make(gpio_config(buttons=[{"line": "GPIO17"}], led={"line": ""}), chip)
    await asyncio.wait_for(buttons.run(), 2)
    h = buttons.health()
    assert h["state"] == "error"
    assert "'GPIO17' not found" in h["error"]
    assert chip.closed


async def test_busy_line_is_an_error_in_health() -> None:
    chip = FakeChip(busy=True)
    buttons = make(gpio_config(), chip)
    await asyncio.wait_for(buttons.run(), 2)
    assert buttons.health()["state"] == "error"
    assert "busy" in buttons.health()["error"]
    assert len(chip.requests) == 1  # EBUSY is not retried without debounce


async def test_kernel_refusing_debounce_falls_back_to_software() -> None:
    chip, daemon = FakeChip(refuse_debounce=True), FakeDaemon()
    buttons = make(gpio_config(debounce_ms=25), chip, daemon)
    async with running(buttons):
        assert [r[17].debounce_ms for r in chip.requests] == [25, 0]
        await tap(chip, 17, 0.08)
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])
        assert buttons.health()["buttons"][0]["presses"] == 1


async def test_chip_search_finds_the_chip_with_the_line() -> None:
    chips = {
        "/dev/gpiochip0": FakeChip("/dev/gpiochip0", names={"ID_SDA": 0}),
        "/dev/gpiochip4": FakeChip("/dev/gpiochip4"),
    }
    daemon = FakeDaemon()
    buttons = buttons_for(
        gpio_config(chip=""), daemon, open_chip=lambda p: chips[p],
        chip_paths=lambda: sorted(chips),
    )
    async with running(buttons):
        assert buttons.health()["chip"] == "/dev/gpiochip4"
        assert chips["/dev/gpiochip0"].closed
        await tap(chips["/dev/gpiochip4"], 17, 0.05)
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])


async def test_disabled_does_nothing() -> None:
    opened: list[str] = []

    def opener(path: str) -> FakeChip:
        opened.append(path)
        return FakeChip()

    buttons = buttons_for(GpioConfig(), FakeDaemon(), open_chip=opener)
    await asyncio.wait_for(buttons.run(), 1)
    assert buttons.health()["state"] == "disabled"
    assert opened == []


def test_config_defaults_and_validation() -> None:
    assert Config().gpio == GpioConfig(enabled=False, buttons=[], led=LedConfig(line=""))
    cfg = parse_config({"gpio": {"enabled": True, "buttons": [{"line": "GPIO17"}],
                                 "led": {"line": 27}}})
    assert cfg.gpio.buttons[0] == ButtonConfig(line="GPIO17")
    assert cfg.gpio.led == LedConfig(line=27)
    with pytest.raises(ConfigError, match=r"gpio.buttons.0.short_press"):
        parse_config({"gpio": {"buttons": [{"line": 1, "short_press": "explode"}]}})
    with pytest.raises(ConfigError, match=r"gpio.buttons.0.colour: unknown key"):
        parse_config({"gpio": {"buttons": [{"line": 1, "colour": "red"}]}})
    with pytest.raises(ConfigError, match=r"gpio.debounce_ms"):
        parse_config({"gpio": {"debounce_ms": -1}})


def test_shipped_config_gpio_example_is_valid_when_uncommented() -> None:
    """config/climbd.toml shows [[gpio.buttons]] commented out (a list of tables has no
    default to show); once the example lines are uncommented they must load."""
    path = Path(__file__).resolve().parent.parent / "config" / "climbd.toml"
    text = path.read_text()
    head, sep, rest = text.partition("\n[gpio]\n")
    assert sep, "config/climbd.toml has no [gpio] section"
    # The [gpio] part ends where a section other than gpio.* begins.
    m = re.search(r"^\[(?!gpio[.\]])", rest, re.MULTILINE)
    gpio, tail = (rest[: m.start()], rest[m.start():]) if m else (rest, "")
    example = re.compile(r"^# (\[\[gpio\.buttons\]\]|[a-z_]+ = .*)$")
    lines = [example.sub(r"\1", line) for line in gpio.splitlines()]
    data = tomllib.loads(head + sep + "\n".join(lines) + "\n" + tail)
    cfg = parse_config(data).gpio
    assert cfg.enabled is False
    assert [b.line for b in cfg.buttons] == ["GPIO17"]
    assert (cfg.buttons[0].short_press, cfg.buttons[0].long_press) == (
        "toggle_recording", "save_last")
    assert cfg.led == LedConfig(line="", active_low=False)


# --------------------------------------------------------------------------- gpio-sim

CONFIGFS = Path("/sys/kernel/config")
GPIO_SIM = CONFIGFS / "gpio-sim"


def _gpio_sim_unavailable() -> str | None:
    """Why the kernel's gpio-sim cannot be used here, or None if it can (tries to load it)."""
    if os.geteuid() != 0:
        return "gpio-sim needs root (configfs)"
    try:
        import gpiod  # noqa: F401
    except ImportError:
        return "gpiod (libgpiod v2 bindings) is not installed"
    if not GPIO_SIM.is_dir():
        if shutil.which("modprobe"):
            subprocess.run(["modprobe", "gpio-sim"], capture_output=True, check=False)
        if CONFIGFS.is_dir() and not any(CONFIGFS.iterdir()):
            subprocess.run(["mount", "-t", "configfs", "none", str(CONFIGFS)],
                           capture_output=True, check=False)
    if not GPIO_SIM.is_dir():
        with open("/proc/filesystems") as f:
            has_configfs = "configfs" in f.read()
        return (
            f"{GPIO_SIM} is missing: this kernel ({os.uname().release}) has "
            + ("no gpio-sim module" if has_configfs else "no configfs (CONFIG_CONFIGFS_FS)")
        )
    return None


@pytest.fixture
def gpio_sim() -> Iterator[tuple[str, Path]]:
    """A simulated chip with line 0 named CLIMBD_BTN and line 1 CLIMBD_LED.

    Yields the chip's /dev path and the sysfs folder of line 0 (write ``pull-down`` to its
    ``pull`` attribute to drive the line low: a button pressed to ground).
    """
    reason = _gpio_sim_unavailable()
    if reason:
        print(f"SKIP gpio-sim: {reason}")
        pytest.skip(reason)
    dev = GPIO_SIM / f"climbd-test-{os.getpid()}"
    bank = dev / "bank0"
    dev.mkdir()
    try:
        bank.mkdir()
        (bank / "num_lines").write_text("4")
        for i, name in enumerate(["CLIMBD_BTN", "CLIMBD_LED"]):
            (bank / f"line{i}").mkdir()
            (bank / f"line{i}" / "name").write_text(name)
        (dev / "live").write_text("1")
        dev_name = (dev / "dev_name").read_text().strip()
        chip_name = (bank / "chip_name").read_text().strip()
        sysfs = Path("/sys/devices/platform") / dev_name / chip_name
        yield f"/dev/{chip_name}", sysfs / "sim_gpio0"
    finally:
        with contextlib.suppress(OSError):
            (dev / "live").write_text("0")
        for i in range(2):
            with contextlib.suppress(OSError):
                (bank / f"line{i}").rmdir()
        with contextlib.suppress(OSError):
            bank.rmdir()
        with contextlib.suppress(OSError):
            dev.rmdir()


@pytest.mark.integration
async def test_presses_on_kernel_gpio_sim(gpio_sim: tuple[str, Path]) -> None:
    chip_path, line0 = gpio_sim
    daemon = FakeDaemon(pre_roll_s=5.0)
    cfg = gpio_config(
        chip=chip_path, long_press_s=0.5, debounce_ms=10,
        buttons=[{"line": "CLIMBD_BTN"}], led={"line": "CLIMBD_LED"},
    )
    buttons = buttons_for(cfg, daemon)  # the real libgpiod
    async with running(buttons):
        assert buttons.health()["state"] == "running", buttons.health()
        # The request's pull-up holds the line high: released.
        assert (line0 / "value").read_text().strip() == "1"

        (line0 / "pull").write_text("pull-down")  # press
        await asyncio.sleep(0.15)
        (line0 / "pull").write_text("pull-up")  # release
        await wait_for(lambda: daemon.recorder.calls == [("start", None)])
        led = Path(str(line0).replace("sim_gpio0", "sim_gpio1"))
        await wait_for(lambda: (led / "value").read_text().strip() == "1")

        (line0 / "pull").write_text("pull-down")  # hold past long_press_s
        await wait_for(lambda: len(daemon.recorder.calls) == 2)
        assert daemon.recorder.calls[1] == ("save_last", 5.0)
        (line0 / "pull").write_text("pull-up")
        await asyncio.sleep(0.2)
        assert len(daemon.recorder.calls) == 2
