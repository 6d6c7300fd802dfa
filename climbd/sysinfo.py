"""What the operator page shows about the machine: CPU use and temperature.

Read from the kernel's own files, no extra dependency, nothing sent anywhere:

- CPU use: the aggregate ``cpu`` line of ``/proc/stat`` (``proc(5)``: user, nice, system,
  idle, iowait, irq, softirq, steal … in USER_HZ ticks); busy share = 1 - (idle + iowait) /
  total between two samples. Load: :func:`os.getloadavg` (``/proc/loadavg``).
- This process: :func:`os.times` (user + system CPU seconds of the daemon and its threads).
- Temperature: ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees Celsius, the kernel's
  thermal sysfs ABI); boards without thermal zones (most x86 VMs) report None.

No HTTP here; :mod:`climbd.api.operator` serves it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuMeter", "SystemInfo", "temperatures"]

PROC_STAT = Path("/proc/stat")
THERMAL = Path("/sys/class/thermal")


def _cpu_ticks(stat_text: str) -> tuple[int, int] | None:
    """``(busy, total)`` ticks from the ``cpu`` line of ``/proc/stat`` text (None if absent)."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total = sum(values[:8])  # guest times are already included in user/nice
            return total - idle, total
    return None


class CpuMeter:
    """Machine and daemon CPU use between consecutive :meth:`sample` calls.

    Args:
        stat_path: ``/proc/stat`` (tests pass a file).
        clock: monotonic clock, seconds.
    """

    def __init__(self, stat_path: Path = PROC_STAT, clock: Any = time.monotonic):
        self._path = stat_path
        self._clock = clock
        self._last = self._read()
        self._last_proc = self._process_seconds()
        self._last_t = clock()

    def _read(self) -> tuple[int, int] | None:
        try:
            return _cpu_ticks(self._path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _process_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, Any]:
        """CPU use since the previous call (or since construction).

        Returns:
            ``percent``: busy share of all cores, 0..100 (None if ``/proc/stat`` is
            unreadable or no tick passed); ``process_percent``: the daemon's CPU time as a
            percentage of one core; ``load1``: 1-minute load average; ``cores``: CPUs.
        """
        now_ticks, now_proc, now = self._read(), self._process_seconds(), self._clock()
        percent = None
        if now_ticks is not None and self._last is not None:
            busy, total = now_ticks[0] - self._last[0], now_ticks[1] - self._last[1]
            if total > 0:
                percent = round(100.0 * busy / total, 1)
        wall = now - self._last_t
        process = round(100.0 * (now_proc - self._last_proc) / wall, 1) if wall > 0 else None
        if now_ticks is not None and (self._last is None or now_ticks[1] > self._last[1]):
            self._last = now_ticks
            self._last_proc, self._last_t = now_proc, now
        try:
            load1: float | None = round(os.getloadavg()[0], 2)
        except OSError:
            load1 = None
        return {"percent": percent, "process_percent": process, "load1": load1,
                "cores": os.cpu_count()}


@dataclass(frozen=True)
class SystemInfo:
    """What the operator page needs beyond the health report.

    Attributes:
        cpu: the machine/daemon CPU meter.
        config_sources: dotted config key -> "file" or "cli" (keys not listed: defaults);
            the daemon's own mapping, filled by ``climbd run``.
    """

    cpu: CpuMeter
    config_sources: Mapping[str, str] = field(default_factory=dict)


def temperatures(root: Path = THERMAL) -> dict[str, float]:
    """Each thermal zone's temperature, ``{type: degrees Celsius}`` (empty without zones).

    A zone whose ``temp`` cannot be read (some report EINVAL/ENODATA when idle) is left out.
    """
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (zone / "type").read_text().strip() or zone.name
        except OSError:
            kind = zone.name
        out[kind if kind not in out else zone.name] = round(milli / 1000.0, 1)
    return out
