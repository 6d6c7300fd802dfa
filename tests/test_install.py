"""scripts/install.sh into a throwaway Debian bookworm root (debootstrap + chroot, no container).

The base root is made once with ``debootstrap --variant=minbase`` (about a minute from the
Debian mirror, a package registry) and cached under /var/cache/climbd-test-chroot; each run
works on an overlayfs copy of it (upper layer in the test's tmp dir), so the cache stays
clean and a run costs only the install itself. The offline wheelhouse
(image/build-wheelhouse.sh, from PyPI) is cached there too, keyed by the lock.

Needs root (debootstrap, chroot, mount). Skips, saying why, when it cannot run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install.sh"
CACHE = Path(os.environ.get("CLIMBD_TEST_CHROOT_CACHE", "/var/cache/climbd-test-chroot"))
MIRROR = os.environ.get("CLIMBD_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# systemd as on the target (units, targets); python3-venv for the venv; the rest builds
# systemd-python, published only as an sdist.
PACKAGES = "systemd,python3,python3-venv,python3-dev,gcc,libc6-dev,pkg-config,libsystemd-dev"
#: Per suite: trixie's Python 3.13 gets mediapipe 1.x, whose libmediapipe.so links libEGL and
#: libGLESv2 (install.sh checks for them; the image's 00-packages lists them).
SUITE_PACKAGES = {"bookworm": PACKAGES, "trixie": PACKAGES + ",libegl1,libgles2"}


def _run(cmd: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


class _Lock:
    """An exclusive lock on a file in the cache, so parallel runs build it once."""

    def __init__(self, name: str) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self._f = open(CACHE / f".{name}.lock", "w")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> None:
        fcntl.flock(self._f, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def host_arch() -> str:
    """This machine's Debian architecture name (amd64, arm64, ...)."""
    return _run(["dpkg", "--print-architecture"], 30).stdout.strip() or "amd64"


def emulation_unavailable(arch: str) -> str:
    """Why binaries of Debian ``arch`` cannot run here ("" when they can: native, or
    qemu-user through binfmt_misc with the F flag, so it works inside a chroot). Mounts
    binfmt_misc and enables the qemu handler when that is all that is missing."""
    if arch == host_arch():
        return ""
    qemu = {"arm64": "aarch64", "armhf": "arm", "riscv64": "riscv64"}.get(arch, arch)
    fs = Path("/proc/sys/fs/binfmt_misc")
    if not (fs / "status").exists():
        r = _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(fs)], 30)
        if r.returncode != 0:
            return f"binfmt_misc cannot be mounted here: {r.stderr.strip()}"
    handler = fs / f"qemu-{qemu}"
    if not handler.exists() and shutil.which("update-binfmts"):
        _run(["update-binfmts", "--enable", f"qemu-{qemu}"], 60)
    if not handler.exists():
        return (f"no binfmt_misc handler for {qemu} "
                "(apt-get install qemu-user-static binfmt-support)")
    text = handler.read_text()
    if not text.startswith("enabled"):
        return f"the binfmt_misc handler qemu-{qemu} is disabled"
    if "F" not in next((ln for ln in text.splitlines() if ln.startswith("flags:")), ""):
        return f"qemu-{qemu} is registered without the F flag (it would not work in a chroot)"
    return ""


def _base_root(suite: str = "bookworm", arch: str | None = None) -> Path:
    """The cached debootstrap root of Debian ``suite`` for ``arch`` (default: this
    machine's; another one runs through qemu-user), built on first use."""
    arch = arch or host_arch()
    packages = SUITE_PACKAGES[suite]
    key = hashlib.sha256(f"{suite} {arch} {packages}".encode()).hexdigest()[:12]
    base = CACHE / f"{suite}-{arch}-{key}"
    with _Lock(base.name):
        if (base / ".climbd-complete").exists():
            return base
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            pytest.skip("debootstrap is missing (apt-get install debootstrap)")
        tmp = base.with_name(base.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            r = _run([debootstrap, "--variant=minbase", f"--arch={arch}",
                      f"--include={packages}", suite, str(tmp), MIRROR], 2400)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip("debootstrap took more than 40 minutes")
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"debootstrap failed ({MIRROR}): {(r.stdout + r.stderr)[-1500:]}")
        (tmp / ".climbd-complete").write_text(f"debootstrap {suite} {packages}\n")
        tmp.rename(base)
        return base


def _host_python_with_pip(version: str) -> str | None:
    """A Python ``version`` with pip on PATH, skipping the test's own venv (it has none)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p != venv_bin)
    candidates = [shutil.which(name, path=path) for name in (f"python{version}", "python3")]
    # pyenv's own interpreters (its shims run only the globally selected versions)
    candidates += sorted(str(p) for p in Path.home().glob(
        f".pyenv/versions/{version}*/bin/python{version}"))
    for exe in candidates:
        if exe is None:
            continue
        r = _run([exe, "-c", "import sys, pip; print('%d.%d' % sys.version_info[:2])"], 60)
        if r.returncode == 0 and r.stdout.strip() == version:
            return exe
    return None


def _wheelhouse(python_version: str, machine: str | None = None) -> Path:
    """The cached offline wheelhouse for ``machine`` (x86_64, aarch64; default this
    machine's), built on first use."""
    machine = machine or os.uname().machine
    h = hashlib.sha256()
    for f in ("uv.lock", "pyproject.toml", "image/build-wheelhouse.sh", "climbd/pose/bundle.py"):
        h.update((REPO / f).read_bytes())
    out = CACHE / f"wheelhouse-{machine}-py{python_version}-{h.hexdigest()[:12]}"
    with _Lock(out.name):
        if (out / "WHEELHOUSE.txt").exists():
            return out
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)  # not the test's venv (no pip there)
        host_python = _host_python_with_pip(python_version)
        if host_python is not None:
            env["HOST_PYTHON"] = host_python  # else the script runs pip with `uv tool run`
        elif _run(["uv", "python", "find", python_version], 60,
                  env={**env, "UV_PYTHON_DOWNLOADS": "never"}).returncode != 0:
            pytest.skip(f"no CPython {python_version} on this machine to download the "
                        "target's wheels with (pip evaluates the lock's markers with its own "
                        "interpreter; a managed Python would be a download)")
        if shutil.which("uv") is None:
            pytest.skip("uv is missing (needed to export the lock and build the wheel)")
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        r = _run(["bash", str(REPO / "image" / "build-wheelhouse.sh"), "--arch",
                  machine, "--python-version", python_version, str(tmp)], 1200,
                 env=env)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"build-wheelhouse.sh failed:\n{(r.stdout + r.stderr)[-3000:]}")
        tmp.rename(out)
        return out


@contextlib.contextmanager
def _overlay_root(work: Path, suite: str = "bookworm", arch: str | None = None) -> Iterator[Path]:
    """A copy-on-write copy of the cached base root (overlayfs; a plain copy without it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, mount)")
    if shutil.which("chroot") is None:
        pytest.skip("chroot is missing")
    base = _base_root(suite, arch)
    merged, upper, wd = work / "merged", work / "upper", work / "work"
    for d in (merged, upper, wd):
        d.mkdir(parents=True)
    r = _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={base},upperdir={upper},workdir={wd}", str(merged)], 60)
    mounted = r.returncode == 0
    if not mounted:  # no overlayfs here: a plain copy (slower)
        merged.rmdir()
        shutil.copytree(base, merged, symlinks=True)
    try:
        yield merged
    finally:
        # install.sh unmounts what it mounted; make sure nothing is left below the root.
        for m in ("proc", "sys", "dev"):
            _run(["umount", "-l", str(merged / m)], 30)
        if mounted:
            _run(["umount", "-l", str(merged)], 60)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh bookworm root for the install tests of this module."""
    with _overlay_root(tmp_path_factory.mktemp("root")) as merged:
        yield merged


@pytest.fixture(scope="module")
def artefacts(root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """install.sh options: the cached wheelhouse and a climbd wheel built from this tree
    (the wheelhouse's own climbd wheel may be older than the code)."""
    pyver = _run(["chroot", str(root), "python3", "-c",
                  "import sys; print('%d.%d' % sys.version_info[:2])"], 60).stdout.strip()
    assert pyver, "python3 does not run in the root"
    wheelhouse = _wheelhouse(pyver)
    dist = tmp_path_factory.mktemp("dist")
    r = _run(["uv", "build", "--wheel", "--out-dir", str(dist), str(REPO)], 600)
    assert r.returncode == 0, r.stderr
    wheel = next(dist.glob("climbd-*.whl"))
    return ["--wheelhouse", str(wheelhouse), "--wheel", str(wheel)]


@pytest.fixture(scope="module")
def installed(root: Path, artefacts: list[str]) -> Path:
    """``install.sh --root`` into the fresh root."""
    r = _run(["bash", str(INSTALL), "--root", str(root), *artefacts], 1200)
    print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
    assert r.returncode == 0, f"install.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return root


#: ELF e_machine -> Debian architecture (of a root's /usr/bin/dpkg, read without running it)
ELF_MACHINES = {0x3E: "amd64", 0xB7: "arm64"}


def root_arch(root: Path) -> str:
    """The Debian architecture of the root file system ``root`` (from its dpkg's ELF header)."""
    head = (root / "usr/bin/dpkg").read_bytes()[:20]
    return ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), "unknown")


#: The CPUs an emulated arm64 root can run as: qemu's CPU model and what the Linux kernel
#: shows for that core in /proc/cpuinfo (MIDR fields and the Features line as on the board:
#: Raspberry Pi 5 = BCM2712, 4x Cortex-A76; Raspberry Pi 4 = BCM2711, 4x Cortex-A72, no
#: crypto extensions; Arm's MIDR part numbers 0xd0b and 0xd08).
EMULATED_CPUS: dict[str, dict[str, str]] = {
    "cortex-a76": {"board": "Raspberry Pi 5", "variant": "0x4", "part": "0xd0b",
                   "revision": "1",
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                               "asimdhp cpuid asimdrdm lrcpc dcpop asimddp"},
    "cortex-a72": {"board": "Raspberry Pi 4", "variant": "0x0", "part": "0xd08",
                   "revision": "3", "features": "fp asimd evtstrm crc32 cpuid"},
}


def emulated_wanted(default: bool = False) -> bool:
    """Run an emulated (arm64 on x86) install test? ``CLIMBD_TEST_EMULATED=1`` runs them all,
    ``CLIMBD_TEST_EMULATED=0`` none; unset, ``default`` (True for the bookworm and trixie
    arm64 tests: 10 and 12 min here with an empty cache, see docs/DEVICES.md)."""
    value = os.environ.get("CLIMBD_TEST_EMULATED", "")
    return default if value == "" else value == "1"


def emulated_cpu(default: str = "cortex-a76") -> str:
    """The qemu CPU model an emulated arm64 root runs as: ``CLIMBD_TEST_EMULATED_CPU``
    (a key of :data:`EMULATED_CPUS`), else ``default``."""
    cpu = os.environ.get("CLIMBD_TEST_EMULATED_CPU", default)
    if cpu not in EMULATED_CPUS:
        raise ValueError(f"CLIMBD_TEST_EMULATED_CPU={cpu!r}: one of {sorted(EMULATED_CPUS)}")
    return cpu


def cpuinfo_text(cpu: str, count: int | None = None) -> str:
    """/proc/cpuinfo of an arm64 Linux kernel on ``count`` (default: this machine's) cores
    of ``cpu`` (see :data:`EMULATED_CPUS`)."""
    c = EMULATED_CPUS[cpu]
    return "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {c['features']}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {c['variant']}\n"
        f"CPU part\t: {c['part']}\nCPU revision\t: {c['revision']}\n\n"
        for i in range(count or os.cpu_count() or 1))


def _chroot(root: Path, *cmd: str, timeout: float = 300,
            cpu: str = "cortex-a76") -> subprocess.CompletedProcess[str]:
    """``chroot root cmd`` with /proc and /sys mounted, as on a booted system: Python in the
    root needs /proc (install.sh unmounted its own), mediapipe 1.x /sys (tcmalloc counts
    CPUs from /sys/devices/system/cpu).

    A root of another architecture runs through qemu-user as ``emulated_cpu(cpu)``
    (``QEMU_CPU``; mediapipe 1.x's aarch64 build needs ARMv8.1 atomics, so a Cortex-A72
    cannot run it) with that CPU's /proc/cpuinfo bind-mounted over the host's: qemu-user 7.2
    (Debian bookworm's) passes the x86 host's /proc/cpuinfo through, which the cpuinfo
    library inside XNNPACK cannot parse on arm64, and mediapipe 1.x's LiteRT then dies with
    SIGSEGV creating its XNNPACK delegate (qemu 8.2 and later emulate the file themselves).
    On a real board the kernel provides that file; this stands in for it."""
    proc, sys_ = root / "proc", root / "sys"
    mounted = []
    if not (proc / "self").exists() and _run(
            ["mount", "-t", "proc", "proc", str(proc)], 30).returncode == 0:
        mounted.append(proc)
    if sys_.is_dir() and not (sys_ / "devices").exists() and _run(
            ["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(sys_)], 30).returncode == 0:
        mounted.append(sys_)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GLOG_minloglevel": "2", "HOME": "/root"}
    arch = root_arch(root)
    if arch == "arm64" and arch != host_arch():
        cpu = emulated_cpu(cpu)
        env["QEMU_CPU"] = cpu
        fake = root / "run/climbd-test-cpuinfo"
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text(cpuinfo_text(cpu))
        cpuinfo = proc / "cpuinfo"
        r = _run(["mount", "--bind", str(fake), str(cpuinfo)], 30)
        assert r.returncode == 0, f"cannot bind {fake} over {cpuinfo}: {r.stderr}"
        mounted.append(cpuinfo)
    try:
        return _run(["chroot", str(root), *cmd], timeout, env=env)
    finally:
        for m in reversed(mounted):
            _run(["umount", str(m)], 30)


#: Debian architecture -> uname machine (a wheelhouse's --arch)
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@contextlib.contextmanager
def fresh_install(tmp_path_factory: pytest.TempPathFactory, suite: str, arch: str, *,
                  python: str, pose_line: str, times: dict[str, float],
                  cpu: str = "cortex-a76") -> Iterator[Path]:
    """A fresh Debian ``suite`` root of architecture ``arch`` (``"amd64"``/``"arm64"``) with
    climbd installed by install.sh, offline, from the cached wheelhouse of the root's Python
    and a wheel built from this tree; unmounted on exit.

    Checks on the way: the root's architecture, its ``python3`` is ``python`` (``"3.11"``),
    and install.sh's output names the pose stack (``pose_line``). A root of another
    architecture runs through qemu-user as ``cpu`` (:func:`_chroot`), and install.sh runs
    there with ``--no-compile`` (byte-compiling the venv under emulation is most of pip's
    time; the code installed is the same). Seconds spent per step go into ``times``
    (``root_s``, ``wheelhouse_s``, ``install_s``) and are printed on exit.

    Skips, with the reason printed, where ``arch`` cannot run here or
    ``CLIMBD_TEST_EMULATED=0`` turns emulated roots off.
    """
    label = f"{suite} {arch} install test"
    why = emulation_unavailable(arch)
    if not why and arch != host_arch() and not emulated_wanted(default=True):
        why = "CLIMBD_TEST_EMULATED=0"
    if why:
        print(f"{label} skipped: {why}")
        pytest.skip(f"{label} skipped: {why}")
    t0 = time.monotonic()
    with _overlay_root(tmp_path_factory.mktemp(f"{suite}-{arch}"), suite, arch) as root:
        times["root_s"] = time.monotonic() - t0
        assert root_arch(root) == arch
        pyver = _chroot(root, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                        cpu=cpu).stdout.strip()
        assert pyver == python, f"{suite}'s python3 is {pyver!r}"
        t1 = time.monotonic()
        wheelhouse = _wheelhouse(pyver, MACHINES[arch])
        times["wheelhouse_s"] = time.monotonic() - t1
        dist = tmp_path_factory.mktemp("dist")
        r = _run(["uv", "build", "--wheel", "--out-dir", str(dist), str(REPO)], 600)
        assert r.returncode == 0, r.stderr
        wheel = next(dist.glob("climbd-*.whl"))
        t2 = time.monotonic()
        no_compile = ["--no-compile"] if arch != host_arch() else []
        r = _run(["bash", str(INSTALL), "--root", str(root), "--wheelhouse", str(wheelhouse),
                  "--wheel", str(wheel), *no_compile], 3600)
        times["install_s"] = time.monotonic() - t2
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
        assert r.returncode == 0, f"install.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        assert pose_line in r.stdout
        yield root
    print(f"{label} times (s):", json.dumps({k: round(v, 1) for k, v in times.items()}))


def test_unit_installed_and_enabled(installed: Path) -> None:
    unit = installed / "etc/systemd/system/climbd.service"
    assert unit.read_text() == (REPO / "systemd/climbd.service").read_text()
    link = installed / "etc/systemd/system/multi-user.target.wants/climbd.service"
    assert link.is_symlink(), "climbd.service is not enabled"
    assert os.readlink(link) == "/etc/systemd/system/climbd.service"
    rule = installed / "etc/udev/rules.d/60-climbd-gpio.rules"
    assert 'GROUP="gpio"' in rule.read_text()


def test_user_and_groups(installed: Path) -> None:
    passwd = {line.split(":")[0]: line.split(":")
              for line in (installed / "etc/passwd").read_text().splitlines()}
    user = passwd["climbd"]
    assert int(user[2]) < 1000, "not a system user"
    assert user[5] == "/var/lib/climbd" and user[6] in ("/usr/sbin/nologin", "/bin/false")
    groups = {line.split(":")[0]: line.split(":")[3].split(",")
              for line in (installed / "etc/group").read_text().splitlines()}
    assert "climbd" in groups["video"] and "climbd" in groups["gpio"]
    assert "climbd" in groups  # its own primary group (Group=climbd in the unit)


def test_venv_is_a_release_symlink_with_the_console_script(installed: Path) -> None:
    venv = installed / "opt/climbd/venv"
    assert venv.is_symlink()
    target = os.readlink(venv)
    assert target.startswith("/opt/climbd/releases/0.1.0-")
    assert (installed / target.lstrip("/") / "bin/climbd").exists()


def test_check_config_passes_inside_the_root(installed: Path) -> None:
    assert (installed / "etc/climbd/climbd.toml").read_text() == (
        REPO / "config/climbd.toml").read_text()
    r = _chroot(installed, "/opt/climbd/venv/bin/climbd", "check-config",
                "/etc/climbd/climbd.toml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_locked_dependencies_import_inside_the_root(installed: Path) -> None:
    """The optional extras and the pose stack work in the target's own Python."""
    code = (
        "import systemd.daemon, systemd.journal, gpiod, cv2, mediapipe as mp, numpy, av, "
        "aiortc, climbd.daemon, climbd.service, climbd.hardware; "
        "mp.solutions.pose.Pose(model_complexity=1).close(); "
        "import importlib.util as u; "
        "assert u.find_spec('jax') is None, 'override not honoured'; "
        "print(numpy.__version__, cv2.__version__, gpiod.__version__)"
    )
    r = _chroot(installed, "/opt/climbd/venv/bin/python", "-c", code, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.split()[0].startswith("1."), "numpy must stay < 2 with mediapipe 0.10.18"


def test_installed_unit_verifies_against_the_root(installed: Path) -> None:
    """The unmodified unit, with its real ExecStart, checked inside the installed root."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    r = _run([exe, "verify", f"--root={installed}", "/etc/systemd/system/climbd.service"], 120)
    if "--root" in r.stderr and "unrecognized" in r.stderr:
        pytest.skip(f"systemd-analyze verify has no --root here: {r.stderr.strip()}")
    messages = [m for m in (r.stdout + r.stderr).splitlines() if m.strip()]
    assert r.returncode == 0 and messages == [], "\n".join(messages)


def test_reinstall_keeps_config_and_switches_release(
    installed: Path, artefacts: list[str]
) -> None:
    conf = installed / "etc/climbd/climbd.toml"
    conf.write_text(conf.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    before = os.readlink(installed / "opt/climbd/venv")
    r = _run(["bash", str(INSTALL), "--root", str(installed), *artefacts, "--no-enable"], 1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'log_level = "debug"' in conf.read_text()
    assert (installed / "etc/climbd/climbd.toml.dist").read_text() == (
        REPO / "config/climbd.toml").read_text()
    after = os.readlink(installed / "opt/climbd/venv")
    assert after != before
    releases = sorted(p.name for p in (installed / "opt/climbd/releases").iterdir())
    assert len(releases) == 2 and Path(before).name in releases


def test_install_refuses_an_invalid_existing_config(
    installed: Path, artefacts: list[str]
) -> None:
    conf = installed / "etc/climbd/climbd.toml"
    conf.write_text(conf.read_text() + "\n[capture2]\nsource = 1\n")
    active = os.readlink(installed / "opt/climbd/venv")
    r = _run(["bash", str(INSTALL), "--root", str(installed), *artefacts, "--no-enable"], 1200)
    assert r.returncode == 1
    assert "not valid" in r.stderr and "capture2" in r.stdout + r.stderr
    assert os.readlink(installed / "opt/climbd/venv") == active


def test_install_sh_usage_errors() -> None:
    r = _run(["bash", str(INSTALL), "--bogus"], 30)
    assert r.returncode == 2 and "unknown option" in r.stderr
    if os.geteuid() == 0:
        r = _run(["bash", str(INSTALL), "--root", "/nonexistent-climbd-root"], 30)
        assert r.returncode == 1 and "not a directory" in r.stderr


def test_pi_gen_stage_installs_climbd(
    tmp_path: Path, artefacts: list[str]
) -> None:
    """image/pi-gen/stage-climbd/00-climbd/01-run.sh as pi-gen runs it: working directory
    = the sub-stage, ROOTFS_DIR = the image root, on_chroot = a shell in the root. Run on
    this machine's architecture (the real build runs the arm64 root through qemu-user)."""
    stage = tmp_path / "stage-climbd"
    shutil.copytree(REPO / "image/pi-gen/stage-climbd", stage, symlinks=True)
    payload = stage / "00-climbd/files/climbd"
    (payload / "scripts").mkdir(parents=True)
    shutil.copy2(INSTALL, payload / "scripts/install.sh")
    shutil.copytree(REPO / "systemd", payload / "systemd")
    shutil.copytree(REPO / "config", payload / "config")
    wheelhouse = Path(artefacts[artefacts.index("--wheelhouse") + 1])
    shutil.copytree(wheelhouse, payload / "wheelhouse", copy_function=os.link)
    for old in (payload / "wheelhouse").glob("climbd-*.whl"):  # the tree's current code
        old.unlink()
    os.link(artefacts[artefacts.index("--wheel") + 1],
            payload / "wheelhouse" / Path(artefacts[artefacts.index("--wheel") + 1]).name)
    with _overlay_root(tmp_path / "image") as rootfs:
        script = (
            'on_chroot() { chroot "$ROOTFS_DIR" /bin/bash -e -s; }; export -f on_chroot; '
            "mount -t proc proc \"$ROOTFS_DIR/proc\"; "
            "trap 'umount \"$ROOTFS_DIR/proc\"' EXIT; ./01-run.sh"
        )
        r = _run(["bash", "-e", "-c", script], 1500, cwd=stage / "00-climbd",
                 env={**os.environ, "ROOTFS_DIR": str(rootfs)})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert (rootfs / "etc/systemd/system/multi-user.target.wants/climbd.service").is_symlink()
        venv = os.readlink(rootfs / "opt/climbd/venv")  # absolute, inside the image
        assert (rootfs / venv.lstrip("/") / "bin/climbd").exists()
        # matplotlib's font cache was built for the service user.
        caches = list((rootfs / "var/cache/climbd/matplotlib").glob("fontlist-*.json"))
        assert caches, "font cache not built"
        passwd = (rootfs / "etc/passwd").read_text()
        uid = next(int(line.split(":")[2]) for line in passwd.splitlines()
                   if line.startswith("climbd:"))
        assert caches[0].stat().st_uid == uid


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
