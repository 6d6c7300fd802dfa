"""The libgpiod v2 seam: what :class:`climbd.hardware.gpio.GpioButtons` needs of a GPIO
chip (:class:`Chip`, :class:`LineRequest`, :class:`EdgeEvent`), and the real adapter over the
``gpiod`` Python bindings (:class:`GpiodChip`, :func:`open_gpiod_chip`). Tests pass a fake
chip that behaves like the hardware.

``gpiod`` (extra ``gpio``) is imported only when a chip is opened, so this module imports on a
machine without it. See https://libgpiod.readthedocs.io/en/latest/python_line_request.html.
"""

from __future__ import annotations

import errno
import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from climbd.errors import GpioError

__all__ = ["DEBOUNCE_REFUSED", "Chip", "ChipOpener", "EdgeEvent", "GpiodChip", "LineRequest",
           "LineSpec", "find_chip_paths", "open_gpiod_chip"]

#: errno values with which a kernel refuses a debounce period it cannot do.
DEBOUNCE_REFUSED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})

Bias = Literal["pull_up", "pull_down", "disabled", "as_is"]


@dataclass(frozen=True)
class LineSpec:
    """How one line is requested, independent of libgpiod (maps onto ``gpiod.LineSettings``).

    Attributes:
        direction: ``"input"`` (a button) or ``"output"`` (an LED).
        active_low: invert the line, so *active* means electrically low.
        bias: pull resistor to enable.
        edge_detection: report rising and falling edges (inputs only).
        debounce_ms: kernel debounce period in milliseconds (0 = none).
        output_value: initial logical value of an output.
    """

    direction: Literal["input", "output"]
    active_low: bool = False
    bias: Bias = "as_is"
    edge_detection: bool = False
    debounce_ms: float = 0.0
    output_value: bool = False


class EdgeEvent(Protocol):
    """What climbd reads from an edge event (a subset of ``gpiod.EdgeEvent``).

    ``event_type.name`` is ``"RISING_EDGE"`` (line became active) or ``"FALLING_EDGE"``;
    ``timestamp_ns`` is on the line's event clock (``CLOCK_MONOTONIC`` by default).
    """

    @property
    def event_type(self) -> Any: ...

    @property
    def timestamp_ns(self) -> int: ...

    @property
    def line_offset(self) -> int: ...


class LineRequest(Protocol):
    """The part of ``gpiod.LineRequest`` climbd uses; values are logical booleans."""

    @property
    def fd(self) -> int: ...

    def read_edge_events(self) -> Sequence[EdgeEvent]: ...

    def wait_edge_events(self, timeout: float) -> bool: ...

    def get_value(self, offset: int) -> bool: ...

    def set_value(self, offset: int, value: bool) -> None: ...

    def release(self) -> None: ...


class Chip(Protocol):
    """The part of ``gpiod.Chip`` climbd uses."""

    @property
    def path(self) -> str: ...

    def line_offset_from_id(self, line: str | int) -> int: ...

    def request_lines(self, config: dict[int, LineSpec], consumer: str) -> LineRequest: ...

    def close(self) -> None: ...


#: Opens a chip by path (the seam tests replace).
ChipOpener = Callable[[str], Chip]




class _GpiodRequest:
    """Adapts ``gpiod.LineRequest`` to :class:`LineRequest` (booleans instead of ``Value``)."""

    def __init__(self, request: Any) -> None:
        import gpiod

        self._request = request
        self._value = gpiod.line.Value

    @property
    def fd(self) -> int:
        return int(self._request.fd)

    def read_edge_events(self) -> Sequence[EdgeEvent]:
        return list(self._request.read_edge_events())

    def wait_edge_events(self, timeout: float) -> bool:
        return bool(self._request.wait_edge_events(timeout))

    def get_value(self, offset: int) -> bool:
        return bool(self._request.get_value(offset) == self._value.ACTIVE)

    def set_value(self, offset: int, value: bool) -> None:
        self._request.set_value(offset, self._value.ACTIVE if value else self._value.INACTIVE)

    def release(self) -> None:
        self._request.release()


class GpiodChip:
    """A GPIO character device opened with libgpiod v2 (``gpiod.Chip``).

    Raises:
        GpioError: the ``gpiod`` package is not installed (extra ``gpio``), or the device
            cannot be opened (missing, not a GPIO chip, or no permission: the user must be in
            the group owning ``/dev/gpiochip*``, ``gpio`` on Raspberry Pi OS).
    """

    def __init__(self, path: str) -> None:
        try:
            import gpiod
        except ImportError:
            raise GpioError(
                "the gpiod package (libgpiod v2 bindings) is not installed: "
                "install climbd with the 'gpio' extra"
            ) from None
        self._gpiod = gpiod
        try:
            self._chip = gpiod.Chip(path)
        except OSError as exc:
            raise GpioError(f"cannot open GPIO chip {path}: {exc.strerror or exc}") from None
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def line_offset_from_id(self, line: str | int) -> int:
        """Offset of a line given by name (``"GPIO17"``) or offset.

        Raises:
            GpioError: no line of that name, or the offset is out of range.
        """
        try:
            return int(self._chip.line_offset_from_id(line))
        except (OSError, ValueError):
            raise GpioError(
                f"GPIO line {line!r} not found on {self._path} (`gpioinfo` lists line names)"
            ) from None

    def line_names(self) -> list[str]:
        """Names of every line of the chip ('' for unnamed lines)."""
        n = self._chip.get_info().num_lines
        return [self._chip.get_line_info(i).name or "" for i in range(n)]

    def request_lines(self, config: dict[int, LineSpec], consumer: str) -> LineRequest:
        """Request the lines with libgpiod settings built from each :class:`LineSpec`.

        Raises:
            GpioError: the request failed (``EBUSY``: another process holds a line).
        """
        g = self._gpiod
        bias = {
            "pull_up": g.line.Bias.PULL_UP,
            "pull_down": g.line.Bias.PULL_DOWN,
            "disabled": g.line.Bias.DISABLED,
            "as_is": g.line.Bias.AS_IS,
        }
        settings: dict[Any, Any] = {}
        for offset, spec in config.items():
            s = g.LineSettings(
                direction=g.line.Direction.OUTPUT
                if spec.direction == "output"
                else g.line.Direction.INPUT,
                edge_detection=g.line.Edge.BOTH if spec.edge_detection else g.line.Edge.NONE,
                bias=bias[spec.bias],
                active_low=spec.active_low,
                debounce_period=timedelta(milliseconds=spec.debounce_ms),
            )
            if spec.direction == "output":
                s.output_value = g.line.Value.ACTIVE if spec.output_value else g.line.Value.INACTIVE
            settings[offset] = s
        try:
            request = self._chip.request_lines(config=settings, consumer=consumer)
        except OSError as exc:
            hint = " (another process holds the line)" if exc.errno == errno.EBUSY else ""
            raise GpioError(
                f"cannot request lines {sorted(config)} on {self._path}: "
                f"{exc.strerror or exc}{hint}",
                exc.errno,
            ) from None
        return _GpiodRequest(request)

    def close(self) -> None:
        self._chip.close()


def open_gpiod_chip(path: str) -> Chip:
    """Open ``path`` with libgpiod (the default :data:`ChipOpener`)."""
    return GpiodChip(path)


def find_chip_paths() -> list[str]:
    """Every GPIO character device, ``/dev/gpiochip0`` first (natural order)."""
    paths = glob.glob("/dev/gpiochip*")
    return sorted(paths, key=lambda p: (len(p), p))
