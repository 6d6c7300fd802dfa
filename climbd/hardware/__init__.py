"""Hardware attached to the appliance: push buttons and a recording LED on GPIO lines.

See :mod:`climbd.hardware.gpio`. ``gpiod`` (libgpiod v2 bindings, extra ``gpio``) is imported
only when a chip is opened, so this package imports on a machine without it.
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
