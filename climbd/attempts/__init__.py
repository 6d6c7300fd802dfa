"""Attempts: found from pose, measured (pure functions and state machines, no I/O).

- :mod:`climbd.attempts.detect`: the incremental attempt detector (live and after the fact);
- :mod:`climbd.attempts.metrics`: per-attempt metrics from world landmarks;
- :mod:`climbd.attempts.com`: centre of mass from segment mass fractions (de Leva 1996).
"""

from climbd.attempts.detect import (
    Attempt,
    AttemptDetector,
    AttemptEvent,
    DetectorParams,
    detect_attempts,
)

__all__ = ["Attempt", "AttemptDetector", "AttemptEvent", "DetectorParams", "detect_attempts"]
