"""scripts/install.sh into a throwaway Debian 13 "trixie" root (Python 3.13), then pose in it.

Two roots: amd64 (this machine's architecture) and arm64 (Raspberry Pi 5 / Jetson Orin), the
latter run through qemu-user-static via binfmt_misc as a Cortex-A76 with that core's
/proc/cpuinfo (``tests.test_install._chroot``: under qemu-user 7.2 the host's x86 file made
mediapipe 1.2.3 die with SIGSEGV creating its XNNPACK delegate), and skipped, with the
reason, where that emulation is not available. The emulated run took 708 s here with an
empty cache (debootstrap 245 s, install.sh ``--no-compile`` 230 s, ingest 202 s) and 21 min
on a busy machine with the root cached, so it runs by default (``CLIMBD_TEST_EMULATED=0``
skips it). mediapipe 1.x's aarch64
build needs ARMv8.1 atomics: install.sh refuses it on a Raspberry Pi 4's Cortex-A72, which
``test_install_refuses_an_arm64_cpu_without_lse`` checks (bookworm on arm64 is proven by
tests/test_install_arm64.py).

Debian 13 and today's Raspberry Pi OS have only CPython 3.13, for which mediapipe 0.10.18
(and so ``mp.solutions.pose``) has no wheel: there the lock installs mediapipe 1.x and the
``tasks`` pose backend runs BlazePose Full from the climbd_blazepose_full bundle that the
wheelhouse carries. This test installs exactly that offline (wheelhouse for CPython 3.13,
``--no-index``), runs ``climbd check-config`` and ``climbd ingest climb_short_2s.mp4`` inside
the root, and compares the stored poses with the ``solutions`` backend on this machine (the
bookworm install's pose stack: the same locked mediapipe 0.10.18 x86_64 wheel, checked by
tests/test_install.py): a pose on every frame it finds one on, landmarks within the
tolerances of tests/test_pose_backends.py.

The debootstrap root and the wheelhouse are cached under /var/cache/climbd-test-chroot (see
tests/test_install.py); a run with a warm cache costs the install and one ingest.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHORT
from tests.test_install import (
    INSTALL,
    MACHINES,
    _chroot,
    _overlay_root,
    _run,
    cpuinfo_text,
    emulated_wanted,
    emulation_unavailable,
    fresh_install,
    host_arch,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(5400)]



MEDIAN_PX = 3.0
MEAN_AFTER_ACQUISITION_PX = 4.0
ACQUISITION_FRAMES = 15
TIMES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", params=sorted(MACHINES))
def installed(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh trixie root with climbd installed by install.sh from a CPython 3.13 wheelhouse."""
    with fresh_install(tmp_path_factory, "trixie", request.param, python="3.13",
                       pose_line="pose: mediapipe 1.x (Tasks API)",
                       times=TIMES.setdefault(request.param, {})) as root:
        yield root


def test_check_config_and_the_pose_stack_inside_trixie(installed: Path) -> None:
    r = _chroot(installed, "/opt/climbd/venv/bin/climbd", "check-config",
                "/etc/climbd/climbd.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    code = (
        "import sys, mediapipe, numpy, climbd_blazepose_full, importlib.util as u; "
        "from climbd.pose import backends; why = backends.available(); "
        "assert why['tasks'] == '', why; assert why['solutions'] != '', why; "
        "assert u.find_spec('jax') is None and u.find_spec('sounddevice') is None; "
        "print(sys.version_info[:2], mediapipe.__version__, numpy.__version__)"
    )
    r = _chroot(installed, "/opt/climbd/venv/bin/python", "-c", code, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.startswith("(3, 13) 1."), r.stdout


def test_ingest_inside_trixie_matches_the_solutions_backend(installed: Path, media: Path) -> None:
    from climbd.ingest import decode_rgb_frames
    from climbd.pose import PoseEstimator
    from climbd.storage import decode_chunk

    shutil.copy2(SHORT, installed / "var/tmp" / SHORT.name)
    arch = _run(["chroot", str(installed), "dpkg", "--print-architecture"], 120).stdout.strip()
    t0 = time.monotonic()
    r = _chroot(installed, "/opt/climbd/venv/bin/climbd", "ingest", f"/var/tmp/{SHORT.name}",
                "--state-dir", "/var/tmp/state", "--json", timeout=2400)
    TIMES[arch]["ingest_s"] = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])

    ref: list[np.ndarray | None] = []
    with PoseEstimator(backend="solutions") as est:
        for i, _t, rgb in decode_rgb_frames(SHORT):
            p = est.process(rgb, i)
            w, h = p.width, p.height
            ref.append(p.image[:, :2] * (w, h) if p.image is not None else None)
    found_ref = [i for i, xy in enumerate(ref) if xy is not None]
    assert res["frames"] == len(ref)

    con = sqlite3.connect(installed / "var/tmp/state/climbd.db")
    blobs = [b for (b,) in con.execute(
        "SELECT blob FROM pose_chunks WHERE session_id=? ORDER BY t_start", (res["id"],))]
    con.close()
    frames = np.concatenate([decode_chunk(b).frames for b in blobs]).tolist()
    image = np.concatenate([decode_chunk(b).image for b in blobs])
    assert set(found_ref) <= set(frames), "trixie misses frames the bookworm stack finds"
    assert res["frames_with_pose"] == len(frames)

    new = {f: image[k, :, :2] * (w, h) for k, f in enumerate(frames)}
    d = np.array([np.linalg.norm(new[f] - ref[f], axis=1) for f in found_ref])  # (n, 33) px
    late = d[[k for k, f in enumerate(found_ref) if f >= ACQUISITION_FRAMES]]
    print(f"trixie {arch} vs solutions on {SHORT.name}: {len(frames)}/{len(ref)} frames with pose "
          f"(solutions {len(found_ref)}), px mean {d.mean():.2f} median {np.median(d):.2f} "
          f"max {d.max():.2f}, mean after acquisition {late.mean():.2f}; times "
          + json.dumps({k: round(v, 1) for k, v in TIMES[arch].items()}))
    assert np.median(d) <= MEDIAN_PX
    assert late.mean() <= MEAN_AFTER_ACQUISITION_PX


@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_install_refuses_an_arm64_cpu_without_lse(
        cpu: str, tmp_path: Path) -> None:
    """mediapipe 1.x's aarch64 build aborts on a CPU without ARMv8.1 atomics (a Raspberry
    Pi 4's Cortex-A72): install.sh says so before installing anything. The root sees that
    board's /proc/cpuinfo (as on the board); a Cortex-A76 (Pi 5) passes the check and fails
    later on purpose (no wheel), which keeps this test to seconds."""
    why = emulation_unavailable("arm64")
    if not why and host_arch() != "arm64" and not emulated_wanted(default=True):
        why = "CLIMBD_TEST_EMULATED=0"
    if why:
        print(f"trixie arm64 LSE check skipped: {why}")
        pytest.skip(why)
    with _overlay_root(tmp_path / "root", "trixie", "arm64") as root:
        fake = tmp_path / "cpuinfo"
        fake.write_text(cpuinfo_text(cpu))
        assert _run(["mount", "-t", "proc", "proc", str(root / "proc")], 30).returncode == 0
        try:
            assert _run(["mount", "--bind", str(fake), str(root / "proc/cpuinfo")],
                        30).returncode == 0
            try:
                r = _run(["bash", str(INSTALL), "--root", str(root),
                          "--wheel", str(tmp_path / "no-such-climbd.whl"),
                          "--requirements", str(tmp_path / "none.txt")],
                         600, env={**os.environ, "QEMU_CPU": cpu})
            finally:
                _run(["umount", str(root / "proc/cpuinfo")], 30)
        finally:
            _run(["umount", str(root / "proc")], 30)
    assert r.returncode == 1, r.stdout + r.stderr
    if cpu == "cortex-a72":
        assert "no ARMv8.1 atomics" in r.stderr and "bookworm" in r.stderr, r.stderr
        assert "creating system user" not in r.stdout, "it went on installing"
    else:
        assert "atomics" not in r.stderr and "no climbd wheel" in r.stderr, r.stderr


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(pytest.main([__file__, "-v", "-s"]))
