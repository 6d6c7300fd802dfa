"""Helpers for the IP-camera tests and bench: a real RTSP camera process, H.264 payloads.

:class:`RtspCamera` runs ``tests/rtsp_camera.py`` (gst-rtsp-server) with the system Python
on 127.0.0.1 and can be killed and restarted on the same port, as a camera that reboots.
:class:`StreamRecorder` reads the camera's stream with PyAV on a thread (a second client of
the same shared stream), keeping every access unit the camera sent, to compare with what
climbd recorded.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest

from climbd.video import nal_units

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"


def rtsp_server_available() -> str | None:
    """None if gst-rtsp-server can run here, else why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("gst-rtsp-server is not installed (scripts/setup installs "
                "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-*): "
                + probe.stderr.strip().splitlines()[-1])
    return None


def need_rtsp_server() -> None:
    """Skip the calling test when the RTSP server cannot run (scripts/setup installs it)."""
    why = rtsp_server_available()
    if why:
        pytest.skip(why)


class RtspCamera:
    """gst-rtsp-server serving a live H.264 stream at ``rtsp://127.0.0.1:PORT/cam``.

    Args:
        log_dir: where the server's stderr goes (``rtsp-camera-N.log``).
        user, password: basic-auth credentials the server demands ("" = none).
        args: more ``rtsp_camera.py`` options (``--width``, ``--fps``, ``--profile`` ...).
    """

    def __init__(self, log_dir: Path, user: str = "", password: str = "", **args: Any):
        self.log_dir = log_dir
        self.user = user
        self.password = password
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def url(self, with_credentials: bool = True) -> str:
        cred = f"{self.user}:{self.password}@" if self.user and with_credentials else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server (on the previous port after the first start) and wait for it."""
        cmd = [SYSTEM_PYTHON, str(HERE / "rtsp_camera.py"), "--port", str(self.port)]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password]
        for key, value in self.args.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        self.starts += 1
        log = open(self.log_dir / f"rtsp-camera-{self.starts}.log", "w")  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while True:  # the port may linger for a moment after a kill
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line:
                break
            self.proc.wait(5)
            if time.monotonic() > deadline:
                raise AssertionError(f"RTSP camera did not start: {cmd}")
            time.sleep(0.2)
        log.close()
        self.port = int(json.loads(line)["port"])

    def kill(self) -> None:
        """SIGKILL the server: the camera vanishes without a goodbye (no RTSP TEARDOWN)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class StreamRecorder:
    """Every access unit a second RTSP client receives: ``(pts_90khz, [NAL units])``.

    Packets with the same pts (slices of one frame split by the demuxer) are joined.
    """

    def __init__(self, url: str, transport: str = "tcp"):
        self.units: list[tuple[int, list[bytes]]] = []
        self.error: BaseException | None = None
        self._url = url
        self._transport = transport
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with av.open(self._url, options={"rtsp_transport": self._transport},
                         timeout=(10, 5)) as c:
                stream = c.streams.video[0]
                pts: int | None = None
                nals: list[bytes] = []
                for p in c.demux(stream):
                    if self._stop.is_set():
                        break
                    if p.size == 0:
                        continue
                    if pts is not None and p.pts is not None and p.pts != pts:
                        self.units.append((pts, nals))
                        nals = []
                    if p.pts is not None:
                        pts = p.pts
                    nals.extend(nal_units(bytes(p)))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def mp4_nal_units(path: Path) -> list[list[bytes]]:
    """The NAL units of every video sample of an MP4 (length-prefixed, avcC), in order."""
    out: list[list[bytes]] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        size = (extradata[4] & 0x03) + 1 if extradata[:1] == b"\x01" else 4
        for p in c.demux(stream):
            if p.size == 0:
                continue
            data = bytes(p)
            units, i = [], 0
            while i + size <= len(data):
                n = int.from_bytes(data[i:i + size], "big")
                units.append(data[i + size:i + size + n])
                i += size + n
            out.append(units)
    return out


def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``cond`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(poll)


def gst_available() -> bool:
    """True if the system Python exists (quick check for collection-time decisions)."""
    return shutil.which(SYSTEM_PYTHON) is not None
