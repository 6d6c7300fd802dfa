"""systemd integration (climbd.service) and the unit file (systemd/climbd.service).

Notifications are checked on a real ``AF_UNIX`` datagram socket owned by the test, the way
systemd receives them (sd_notify(3)); the unit file with ``systemd-analyze``; the whole thing
end to end with ``climbd run`` as a subprocess whose ``NOTIFY_SOCKET`` is the test's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from climbd import service
from climbd.service import (
    JournalFieldsFilter,
    Notifier,
    bind,
    format_duration,
    format_status,
    setup_logging,
    supervise,
)
from tests.conftest import wait_until

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "climbd.service"
SHORT = REPO.parent / "shared" / "media" / "climb_short_2s.mp4"
CLIMBD_BIN = Path(sys.executable).parent / "climbd"  # the console script, as in ExecStart


# --------------------------------------------------------------------------- helpers


class NotifySocket:
    """The service manager's end: an AF_UNIX datagram socket collecting messages."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind("\0" + abstract)
            self.env_value = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                for line in data.decode().split("\n"):
                    if line:
                        self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "", since: float = 0.0) -> list[str]:
        with self._lock:
            return [m for t, m in self.messages if m.startswith(prefix) and t >= since]

    def times(self, prefix: str = "") -> list[float]:
        """Arrival times (``time.monotonic``) of the messages starting with ``prefix``."""
        with self._lock:
            return [t for t, m in self.messages if m.startswith(prefix)]

    def wait_for(self, prefix: str, timeout: float, since: float = 0.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines(prefix, since)
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {prefix!r} within {timeout}s; got {self.lines()[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


class FakeDaemon:
    """Implements the two calls supervise() makes."""

    def __init__(self) -> None:
        self.alive = True
        self.fail = False
        self.elapsed = 0.0

    def pipeline_alive(self) -> bool:
        if self.fail:
            raise RuntimeError("pipeline state unreadable")
        return self.alive

    def health(self) -> dict[str, Any]:
        self.elapsed += 1
        return {
            "capture": {"state": "running" if self.alive else "lost", "fps": 30.0,
                        "source": "/dev/video0", "error": None if self.alive else "stalled",
                        "last_frame_age_s": 0.01},
            "pose": {"fps": 29.8, "last_result_age_s": 0.02, "inference_ms_p50": 19.0},
            "recording": {"state": "idle", "session_id": None, "name": None, "elapsed_s": 0.0},
            "viewers": 1,
        }


# --------------------------------------------------------------------------- Notifier


@pytest.mark.parametrize("use_libsystemd", [False, True], ids=["stdlib", "libsystemd"])
def test_notifier_sends_each_message(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch, use_libsystemd: bool
) -> None:
    if use_libsystemd:
        pytest.importorskip("systemd.daemon")
        monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
        n = Notifier()  # reads os.environ; libsystemd reads $NOTIFY_SOCKET itself
    else:
        n = Notifier({"NOTIFY_SOCKET": notify_socket.env_value})
    assert n.enabled
    assert n.ready() and n.status("camera ok\n30 fps") and n.watchdog() and n.stopping()
    notify_socket.wait_for("STOPPING=1", 2)
    assert notify_socket.lines() == ["READY=1", "STATUS=camera ok 30 fps", "WATCHDOG=1",
                                     "STOPPING=1"]


def test_notifier_abstract_socket() -> None:
    s = NotifySocket(abstract=f"climbd-test-{os.getpid()}")
    try:
        assert Notifier({"NOTIFY_SOCKET": s.env_value}).ready()
        assert s.wait_for("READY", 2) == "READY=1"
    finally:
        s.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_interval() is None


def test_notifier_dead_socket_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert n.watchdog() is False
    assert caplog.text.count("cannot notify") == 1


def test_notifier_status_is_one_bounded_line(notify_socket: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": notify_socket.env_value})
    n.status("x" * 500 + "\nsecond line")
    line = notify_socket.wait_for("STATUS=", 2)
    assert "\n" not in line and len(line) == len("STATUS=") + service.STATUS_MAX_CHARS


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "OWN"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: (str(os.getpid()) if v == "OWN" else v) for k, v in env.items()}
    assert Notifier(env).watchdog_interval() == expected


# --------------------------------------------------------------------------- status line


def test_format_status_example_from_the_issue() -> None:
    health = {
        "capture": {"state": "running", "fps": 30.0, "source": "/dev/video0", "error": None},
        "pose": {"fps": 29.8},
        "recording": {"state": "recording", "session_id": 3, "name": "Session 3",
                      "elapsed_s": 42.7},
        "viewers": 2,
    }
    assert format_status(health) == (
        'camera ok 30.0 fps, pose 29.8 fps, 2 viewers, recording "Session 3" 00:42'
    )


def test_format_status_other_states() -> None:
    assert format_status({
        "capture": {"state": "lost", "error": "VIDIOC_DQBUF: No such device"},
        "pose": {"fps": 0}, "viewers": 1,
        "recording": {"state": "recording", "session_id": 7, "name": None, "elapsed_s": 3725},
        "gpio": {"state": "error", "error": "no chip"},
    }) == ("camera lost: VIDIOC_DQBUF: No such device, pose 0.0 fps, 1 viewer, "
           'recording "session 7" 1:02:05, button error')
    assert format_status({"capture": {"state": "connecting", "source": "rtsp://cam/1"},
                          "recording": {"state": "idle"}, "viewers": 0}) == (
        "camera connecting to rtsp://cam/1, 0 viewers, idle")
    assert format_status({}) == "starting"


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59.9, 60, 3599, 3600, -4)] == [
        "00:00", "00:59", "01:00", "59:59", "1:00:00", "00:00"]


# --------------------------------------------------------------------------- supervise


async def test_supervise_withholds_watchdog_while_pipeline_dead(
    notify_socket: NotifySocket,
) -> None:
    daemon = FakeDaemon()
    n = Notifier({"NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "100000"})
    assert n.watchdog_interval() == 0.05
    task = asyncio.create_task(supervise(daemon, n))  # interval from WATCHDOG_USEC
    try:
        await asyncio.sleep(0.4)
        alive_pings = len(notify_socket.lines("WATCHDOG=1"))
        assert alive_pings >= 4
        assert notify_socket.lines("STATUS=") == [
            "STATUS=camera ok 30.0 fps, pose 29.8 fps, 1 viewer, idle"]  # sent on change only

        daemon.alive = False
        await asyncio.sleep(0.1)  # one tick may have been in flight
        dead_since = time.monotonic()
        await asyncio.sleep(0.4)
        assert notify_socket.lines("WATCHDOG=1", since=dead_since) == []
        assert notify_socket.lines("STATUS=camera lost: stalled")

        daemon.fail = True  # pipeline_alive() raising counts as dead, loop survives
        await asyncio.sleep(0.2)
        assert notify_socket.lines("WATCHDOG=1", since=dead_since) == []
        assert not task.done()

        daemon.fail, daemon.alive = False, True
        back = time.monotonic()
        await asyncio.sleep(0.3)
        assert len(notify_socket.lines("WATCHDOG=1", since=back)) >= 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_supervise_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        await supervise(FakeDaemon(), Notifier({}), 0)


# --------------------------------------------------------------------------- logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_setup_logging_stderr_shows_fields(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup_logging("debug", environ={}) == "stderr"
    assert setup_logging("info", environ={}) == "stderr"  # no duplicate handler
    log = bind(logging.getLogger("climbd.test"), camera="/dev/video0")
    log.info("recording started", extra={"session_id": 3})
    log.debug("not shown at info")
    err = capsys.readouterr().err
    assert err.count("recording started") == 1
    assert "[camera=/dev/video0 session_id=3]" in err
    assert "not shown" not in err
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("chatty", environ={})


def test_setup_logging_journal_structured_fields(restore_logging: None) -> None:
    journal = pytest.importorskip("systemd.journal")
    assert setup_logging("info", environ={"INVOCATION_ID": "0123abcd"}) == "journal"
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_climbd", False))
    assert isinstance(handler, journal.JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    handler.send = lambda MESSAGE, **fields: sent.append((MESSAGE, fields))
    logging.getLogger("climbd.test").warning(
        "session %d saved", 3, extra={"session_id": 3, "camera": "/dev/video0"})
    assert len(sent) == 1
    msg, fields = sent[0]
    assert msg == "session 3 saved"
    assert fields["SESSION_ID"] == 3
    assert fields["CAMERA"] == "/dev/video0"
    assert fields["SYSLOG_IDENTIFIER"] == "climbd"
    assert fields["PRIORITY"] == "4"  # LOG_WARNING


def test_journal_fields_filter_skips_invalid_names() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.__dict__.update({"session_id": 1, "9lives": 2, "priority": 7, "naïve": 3})
    assert JournalFieldsFilter().filter(record)
    assert record.SESSION_ID == 1  # type: ignore[attr-defined]
    assert not hasattr(record, "9LIVES") and not hasattr(record, "NAÏVE")
    assert not hasattr(record, "PRIORITY")  # reserved: set by the handler


# --------------------------------------------------------------------------- unit file


def _unit_directives() -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive of the unit."""
    out, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def test_unit_has_the_required_directives() -> None:
    d = {(s, k): v for s, k, v in _unit_directives()}
    svc = {k: v for (s, k), v in d.items() if s == "Service"}
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == "/opt/climbd/venv/bin/climbd run --config /etc/climbd/climbd.toml"
    assert svc["User"] == "climbd"
    assert svc["SupplementaryGroups"] == "video gpio"
    assert svc["Environment"]  # at least one; GLOG checked below
    envs = [v for s, k, v in _unit_directives() if k == "Environment"]
    assert "GLOG_minloglevel=2" in envs
    assert "PrivateDevices" not in svc  # would hide /dev/video*
    assert {v for s, k, v in _unit_directives() if k == "DeviceAllow"} == {
        "char-video4linux rw", "char-gpiochip rw"}
    assert d[("Install", "WantedBy")] == "multi-user.target"
    # The restart limits live in [Unit] (systemd.unit(5)), not [Service].
    assert ("Unit", "StartLimitBurst") in d and ("Unit", "StartLimitIntervalSec") in d


def test_every_unit_directive_is_commented() -> None:
    previous = ""
    for n, raw in enumerate(UNIT.read_text().splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            assert previous.startswith("#"), f"line {n} has no comment above it: {line}"
        if line:
            previous = line


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at /bin/true.

    ``systemd-analyze verify`` fails when the ExecStart binary does not exist, and
    /opt/climbd/venv exists only on an installed system; everything else is unchanged.
    """
    text = UNIT.read_text()
    assert text.count("ExecStart=/opt/climbd/venv/bin/climbd ") == 1
    true = shutil.which("true") or "/bin/true"
    copy = tmp_path / "climbd.service"
    copy.write_text(text.replace("ExecStart=/opt/climbd/venv/bin/climbd ", f"ExecStart={true} "))
    return copy


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is missing (Debian: apt-get install systemd)")
    return exe


@pytest.mark.integration
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = _systemd_analyze()
    copy = _verifiable_copy(tmp_path)
    r = subprocess.run([exe, "verify", str(copy)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    messages = [m for m in (r.stdout + r.stderr).splitlines() if m.strip()]
    assert r.returncode == 0 and messages == [], "\n".join(messages)


@pytest.mark.integration
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    exe = _systemd_analyze()
    copy = _verifiable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = subprocess.run([exe, "verify", str(copy)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert "NoNewPrivilege" in r.stdout + r.stderr


@pytest.mark.integration
def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    exe = _systemd_analyze()
    copy = _verifiable_copy(tmp_path)
    r = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(copy)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    if "--offline" in r.stderr and r.returncode != 0:
        pytest.skip(f"systemd-analyze too old for --offline (systemd >= 252): {r.stderr}")
    m = re.search(r"Overall exposure level for climbd\.service: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security exposure: {exposure} {m.group(2)}")
    assert exposure <= 3.0, r.stdout


# --------------------------------------------------------------------------- end to end

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # <linux/prctl.h>, Linux >= 6.3


def _mdwe_supported() -> bool:
    r = subprocess.run(
        [sys.executable, "-c",
         "import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); "
         f"sys.exit(0 if libc.prctl({PR_SET_MDWE},{PR_MDWE_REFUSE_EXEC_GAIN},0,0,0)==0 else 1)"],
        capture_output=True, timeout=30,
    )
    return r.returncode == 0


def _enable_mdwe() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


class ClimbdProcess:
    """``climbd run`` as systemd would start it: NOTIFY_SOCKET and WATCHDOG_USEC set."""

    def __init__(self, tmp_path: Path, notify: NotifySocket, source: str, *extra: str,
                 mdwe: bool = False) -> None:
        if not CLIMBD_BIN.exists():
            pytest.skip(f"console script {CLIMBD_BIN} missing")
        env = {k: v for k, v in os.environ.items()
               if k not in ("INVOCATION_ID", "JOURNAL_STREAM", "WATCHDOG_PID")}
        # WATCHDOG_PID is not set: the child's pid is not known before it starts.
        env.update(NOTIFY_SOCKET=notify.env_value, WATCHDOG_USEC="2000000",
                   GLOG_minloglevel="2")
        self.log_path = tmp_path / "climbd.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(CLIMBD_BIN), "run", "--source", source, "--state-dir", str(tmp_path / "state"),
             "--host", "127.0.0.1", "--port", "0", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            preexec_fn=_enable_mdwe if mdwe else None,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _need_media() -> None:
    if not SHORT.exists():
        pytest.skip(f"test media missing: {SHORT}")


@pytest.mark.media
@pytest.mark.timing
def test_daemon_notifies_ready_status_watchdog_and_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    _need_media()
    d = ClimbdProcess(tmp_path, notify_socket, str(SHORT), "--loop")
    try:
        try:
            notify_socket.wait_for("READY=1", 120)
            status = notify_socket.wait_for("STATUS=camera ok", 30)
            notify_socket.wait_for("WATCHDOG=1", 30)
            first = notify_socket.times("WATCHDOG=1")[0]

            def three_more() -> list[float] | None:
                later = [t for t in notify_socket.times("WATCHDOG=1") if t > first]
                return later[:3] if len(later) >= 3 else None

            pings = wait_until(three_more, 15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{d.log()}") from None
        assert "pose" in status and "fps" in status
        # WATCHDOG_USEC=2 s -> a ping every second while frames and poses flow (half the
        # timeout is sd_watchdog_enabled's advice; the loop may be late, never early).
        gaps = [b - a for a, b in zip([first, *pings], pings, strict=False)]
        assert all(0.5 <= g <= 2.0 for g in gaps), gaps
    finally:
        rc = d.stop()
    assert notify_socket.lines("STOPPING=1"), notify_socket.lines()[-5:]
    assert rc == 0, d.log()


def _write_y4m(fifo: Path, seconds_of_video: float, done: threading.Event,
               stop: threading.Event) -> None:
    """Feed the clip as a YUV4MPEG2 stream into ``fifo``, set ``done``, then stall: keep the
    pipe open without writing (a wedged camera) until ``stop``."""
    import av

    with av.open(str(SHORT)) as c:
        frames = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
    assert rate is not None
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    count = int(seconds_of_video * float(rate))
    with open(fifo, "wb") as out:  # blocks until the daemon opens the FIFO
        out.write(f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 "
                  "C420jpeg\n".encode())
        for i in range(count):
            if stop.is_set():
                return
            out.write(b"FRAME\n" + frames[i % len(frames)].tobytes())
        out.flush()
        done.set()
        stop.wait()


@pytest.mark.media
@pytest.mark.timing
def test_watchdog_stops_when_capture_stalls(tmp_path: Path, notify_socket: NotifySocket
                                            ) -> None:
    """A source that stops delivering (the pipe stays open, nothing comes) makes the daemon
    withhold WATCHDOG=1, so systemd's WatchdogSec= restarts it."""
    _need_media()
    fifo = tmp_path / "camera.y4m"
    os.mkfifo(fifo)
    done, stop = threading.Event(), threading.Event()
    writer = threading.Thread(target=_write_y4m, args=(fifo, 8.0, done, stop), daemon=True)
    writer.start()
    d = ClimbdProcess(tmp_path, notify_socket, str(fifo))
    try:
        try:
            notify_socket.wait_for("READY=1", 120)
            notify_socket.wait_for("WATCHDOG=1", 30)
            # The writer finishes 8 s of video and stalls; frames older than the stall
            # timeout (capture.stall_timeout_s = 5 s) make the pipeline not alive.
            if not done.wait(60):
                raise AssertionError("the daemon did not read the 8 s of video")
            # pings stop: none for three ping intervals (1 s each), while the process lives
            wait_until(lambda: time.monotonic() - notify_socket.times("WATCHDOG=1")[-1] >= 3.0,
                       30, 0.1, lambda: f"pings go on: {notify_socket.times('WATCHDOG=1')[-5:]}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{d.log()}") from None
        assert d.proc.poll() is None, d.log()  # alive, just not pinging
        assert notify_socket.lines("WATCHDOG=1", since=0) != []
    finally:
        stop.set()
        d.stop()
        writer.join(5)


@pytest.mark.media
@pytest.mark.timing
def test_daemon_runs_with_memory_deny_write_execute(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: the daemon, MediaPipe pose (TFLite/XNNPACK),
    the H.264 encoder and aiortc must run without writable+executable memory. The kernel's
    prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) enforces the same rule as systemd's seccomp
    filter; WATCHDOG=1 proves frames are encoded and pose results arrive."""
    _need_media()
    if not _mdwe_supported():
        pytest.skip(f"kernel {os.uname().release} has no PR_SET_MDWE (Linux >= 6.3)")
    d = ClimbdProcess(tmp_path, notify_socket, str(SHORT), "--loop", mdwe=True)
    try:
        try:
            notify_socket.wait_for("READY=1", 120)
            notify_socket.wait_for("WATCHDOG=1", 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{d.log()}") from None
    finally:
        d.stop()
