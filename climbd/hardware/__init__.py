"""Hardware attached to the appliance: push buttons and a recording LED on GPIO lines.

- :mod:`climbd.hardware.gpio` — the buttons and LED on the asyncio loop (actions, health);
- :mod:`climbd.hardware.debounce` — the pure debounce / press-classification state machine;
- :mod:`climbd.hardware.libgpiod` — the seam to libgpiod v2 and the real adapter. ``gpiod``
  (extra ``gpio``) is imported only when a chip is opened, so this package imports on a
  machine without it.
"""

from climbd.hardware.gpio import (
    Chip,
    GpioButtons,
    GpiodChip,
    GpioError,
    LineRequest,
    LineSpec,
    find_chip_paths,
    open_gpiod_chip,
)

__all__ = [
    "Chip",
    "GpioButtons",
    "GpioError",
    "GpiodChip",
    "LineRequest",
    "LineSpec",
    "find_chip_paths",
    "open_gpiod_chip",
]
