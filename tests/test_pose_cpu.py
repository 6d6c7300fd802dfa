"""The tasks pose backend refuses, with a PoseError instead of mediapipe 1.x's process abort,
an arm64 CPU without ARMv8.1 atomics (a Raspberry Pi 4's Cortex-A72). The cpuinfo texts are
those the board's kernel shows (tests/test_install.py's EMULATED_CPUS)."""

from __future__ import annotations

import pytest

from climbd.pose.backends import lse_missing
from tests.test_install import cpuinfo_text

pytestmark = pytest.mark.unit


def test_a_pi_4_lacks_lse_and_a_pi_5_has_it() -> None:
    assert lse_missing("aarch64", cpuinfo_text("cortex-a72", 4))
    assert not lse_missing("aarch64", cpuinfo_text("cortex-a76", 4))


def test_other_machines_and_unreadable_text_are_not_refused() -> None:
    # an x86 /proc/cpuinfo (what qemu-user 7.2 passes through) names no arm64 features
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2\n"
    assert not lse_missing("x86_64", x86)
    assert not lse_missing("aarch64", x86)   # nothing to judge by: let mediapipe try
    assert not lse_missing("aarch64", "")


def test_one_core_without_atomics_is_enough_to_refuse() -> None:
    mixed = cpuinfo_text("cortex-a76", 2) + cpuinfo_text("cortex-a72", 1)
    assert lse_missing("aarch64", mixed)
