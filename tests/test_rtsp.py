"""IP cameras against a real RTSP server process on loopback (gst-rtsp-server, not a fake).

- frames arrive at the camera's rate, over RTSP/TCP and RTSP/UDP, with a sane fps figure;
- the camera is killed for 10 s and restarted on the same port: health and systemd STATUS
  say "lost" (never "ended"), capture reconnects with the normal backoff within 30 s of
  the camera's return, and a recording running across the drop continues after it with the
  gap recorded (``gaps.json``, continuous time base) and every frame it had;
- the camera's credentials (``rtsp://user:password@...``) appear in no health report, API
  response, STATUS line or log line;
- a camera that comes back with another frame size finalises the recording at the drop;
- an HTTP MJPEG camera (a real HTTP server on loopback) that goes away is lost, not ended,
  and comes back.

Passthrough (the camera's own H.264) is in ``tests/test_passthrough.py``.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from climbd.capture import CaptureState, CaptureWorker, Frame, open_source
from climbd.config import CaptureConfig
from climbd.storage import probe
from tests.conftest import DaemonProcess
from tests.rtsp_support import RtspCamera, need_rtsp_server, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timing]  # a camera server process; wall-clock rates

USER, PASSWORD = "camuser", "s3cret-Pw"
FPS = 30


@pytest.fixture
def cameras(tmp_path: Path) -> Iterator[list[RtspCamera]]:
    """Cameras a test starts (``cameras.append``); all are stopped at teardown."""
    need_rtsp_server()
    made: list[RtspCamera] = []
    yield made
    for cam in made:
        cam.stop()


@pytest.mark.parametrize(("transport", "rate"), [("tcp", 30), ("udp", 25)])
def test_frames_at_the_camera_rate(tmp_path: Path, cameras: list[RtspCamera],
                                   transport: str, rate: int) -> None:
    cam = RtspCamera(tmp_path, USER, PASSWORD, fps=rate)
    cameras.append(cam)
    cam.start()
    cfg = CaptureConfig(source=cam.url(), rtsp_transport=transport)  # type: ignore[arg-type]
    frames: list[tuple[float, Frame]] = []
    worker = CaptureWorker(lambda n: open_source(cam.url(), cfg, n),
                           lambda f: frames.append((time.monotonic(), f)), cfg)
    worker.start()
    try:
        wait_for(lambda: len(frames) >= rate, 20, "first second of frames")
        n0, t0 = len(frames), time.monotonic()   # after the first second (start-up burst)
        wait_for(lambda: time.monotonic() - t0 >= 3.0, 5, "3 s of capture", poll=0.2)
        n1, t1 = len(frames), time.monotonic()
        measured = (n1 - n0) / (t1 - t0)
        assert rate * 0.9 <= measured <= rate * 1.1, measured
        # the health figure: frames per second of capture time over a sliding window
        assert rate * 0.9 <= worker.fps <= rate * 1.1, worker.fps
        assert worker.state is CaptureState.RUNNING and worker.error is None
        assert worker.source_fps == rate   # the stream's nominal rate, not the config's
        # timestamps follow the camera's own clock: evenly spaced even when packets come
        # in bursts (after the first second)
        ts = [f.timestamp for _, f in frames[n0:n1]]
        steps = [b - a for a, b in itertools.pairwise(ts)]
        assert min(steps) > 0 and max(steps) < 3.0 / rate
        assert [f.number for _, f in frames] == list(range(len(frames)))
        image = frames[-1][1].image
        assert image is not None and (image.width, image.height) == (640, 360)
    finally:
        worker.stop()
    assert worker.state is CaptureState.STOPPED


def test_open_errors_never_show_credentials(tmp_path: Path, cameras: list[RtspCamera]) -> None:
    cam = RtspCamera(tmp_path, USER, PASSWORD)
    cameras.append(cam)
    cam.start()
    wrong = f"rtsp://{USER}:wrong-{PASSWORD}@127.0.0.1:{cam.port}/cam"
    with pytest.raises(Exception) as info:  # SourceError: 401 Unauthorized
        open_source(wrong, CaptureConfig())
    text = str(info.value)
    assert "401" in text or "nauthorized" in text, text
    assert PASSWORD not in text and USER not in text and "rtsp://***@127.0.0.1" in text
    # FFmpeg's own exception quotes the URL with the password: proof the redaction matters
    with pytest.raises(av.FFmpegError) as raw:
        av.open(wrong, timeout=(10, 5))
    assert PASSWORD in str(raw.value)


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``: keeps every message."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except OSError:
                continue

    def statuses(self) -> list[str]:
        return [line[7:] for m in list(self.messages) for line in m.splitlines()
                if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _health(d: DaemonProcess) -> dict[str, Any]:
    status, body = d.get("/api/health", timeout=5)
    assert status == 200, body
    return dict(body)


@pytest.mark.parametrize(("transport", "encoder"), [("tcp", "copy"), ("udp", "libx264")])
def test_camera_killed_for_10_s_reconnects_and_the_recording_keeps_every_frame(
        tmp_path: Path, cameras: list[RtspCamera], daemon_factory: Any,
        transport: str, encoder: str) -> None:
    cam = RtspCamera(tmp_path, USER, PASSWORD, fps=FPS, gop=FPS)
    cameras.append(cam)
    cam.start()
    cfg = tmp_path / "climbd.toml"
    cfg.write_text(f'[capture]\nsource = "{cam.url()}"\nrtsp_transport = "{transport}"\n'
                   f'[video]\nencoder = "{encoder}"\n[pose]\nenabled = false\n')
    notify = NotifySocket(tmp_path / "notify.sock")
    d = daemon_factory(cam.url(), "--config", str(cfg), loop=False,
                       env={"NOTIFY_SOCKET": str(notify.path)})
    seen: list[dict[str, Any]] = []   # every health report, checked for credentials

    def health() -> dict[str, Any]:
        h = _health(d)
        seen.append(h)
        return h

    try:
        d.wait_ready(60, capture=False)
        # (the first second after a connect can be a burst of the server's backlog)
        wait_for(lambda: health()["capture"]["frames"] > 3 * FPS, 30, "capture running")
        # sane fps: the figure settles at the camera's rate (a 2 s window of capture times)
        h = wait_for(lambda: FPS * 0.8 <= (h := health())["capture"]["fps"] <= FPS * 1.2
                     and h, 10, "fps at the camera's rate")
        assert h["capture"]["state"] == "running"
        assert h["video"]["mode"] == ("copy" if encoder == "copy" else "encode"), h["video"]

        status, started = d.post("/api/recordings/start", {"name": "across", "pre_roll_s": 0})
        assert status == 201, started
        sid = started["id"]
        wait_for(lambda: health()["recording"]["frames"] >= 2 * FPS, 10, "2 s recorded")
        had = health()["recording"]["frames"]

        cam.kill()
        t_kill = time.monotonic()
        lost = wait_for(lambda: (h := health())["capture"]["state"] == "lost" and h, 20,
                        "capture lost")
        assert lost["capture"]["error"], lost["capture"]
        assert lost["capture"]["fps"] <= FPS * 1.2, lost["capture"]  # never 38034
        assert "camera lost" in " ".join(lost["problems"]) or lost["status"] == "degraded"
        wait_for(lambda: any("camera lost" in s for s in notify.statuses()), 15,
                 "STATUS=camera lost")
        # while the camera is away: lost or reconnecting, never "ended"
        while time.monotonic() - t_kill < 10.0:
            state = health()["capture"]["state"]
            assert state in ("lost", "connecting", "running"), state
            time.sleep(0.5)
        assert health()["recording"]["state"] == "recording"

        cam.start()   # the camera is back, same port
        t_back = time.monotonic()
        frames_then = health()["capture"]["frames"]
        wait_for(lambda: (h := health())["capture"]["state"] == "running"
                 and h["capture"]["frames"] > frames_then + FPS, 45, "capture back")
        reconnect_s = time.monotonic() - t_back
        print(f"[{transport}/{encoder}] lost detected {lost['capture']['lost_for_s']} s "
              f"after the kill; frames again {reconnect_s:.1f} s after the camera's return")
        assert reconnect_s < 30.0
        wait_for(lambda: health()["capture"]["frames"] > frames_then + 3 * FPS, 10,
                 "3 s of frames after the return")
        back = wait_for(lambda: FPS * 0.8 <= (h := health())["capture"]["fps"] <= FPS * 1.2
                        and h, 10, "fps at the camera's rate again")
        assert back["capture"]["error"] is None and back["capture"]["reconnects"] >= 1
        wait_for(lambda: any(s.startswith("camera ok") for s in notify.statuses()[-3:]), 15,
                 "STATUS=camera ok again")
        gaps = health()["recording"]["gaps"]
        assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] >= 9.5, gaps
        recorded = wait_for(lambda: (n := health()["recording"]["frames"]) >= had + 2 * FPS
                            and n, 15, "recording continues after the gap")

        status, done = d.post("/api/recordings/stop")
        assert status == 200, done
        assert done["status"] == "completed" and done["id"] == sid, done
        assert done["frame_count"] >= recorded

        # the file: every frame the recording had, with the gap in its time base
        session_dir = d.state_dir / "sessions" / str(sid)
        video = session_dir / "video.mp4"
        info = probe(video)
        assert info.frames == done["frame_count"]
        with av.open(str(video)) as c:
            times = [float(p.pts * p.time_base) for p in c.demux(video=0) if p.size]
        steps = [b - a for a, b in itertools.pairwise(times)]
        jump = max(range(len(steps)), key=steps.__getitem__)
        assert steps[jump] >= 9.5, steps[jump]
        assert sorted(steps)[-2] < 0.5, "one gap only"
        assert jump + 1 >= had, (jump + 1, had)   # every frame before the drop is there
        recorded_gaps = json.loads((session_dir / "gaps.json").read_text())
        assert len(recorded_gaps) == 1
        assert recorded_gaps[0]["from_s"] == pytest.approx(times[jump], abs=0.05)
        assert recorded_gaps[0]["to_s"] == pytest.approx(times[jump + 1], abs=0.05)
        assert done["duration_s"] == pytest.approx(times[-1] + 1 / FPS, abs=0.2)

        # the credentials appear nowhere: health, API, STATUS, log file
        texts = [json.dumps(h) for h in seen] + [json.dumps(done)]
        for path in ("/api/sessions", f"/api/sessions/{sid}", "/api/system", "/api/openapi.json"):
            status, body = d.get(path)
            texts.append(body.decode(errors="replace") if isinstance(body, bytes)
                         else json.dumps(body))
        texts += notify.statuses()
        texts.append(d.log_path.read_text(errors="replace"))
        blob = "\n".join(texts)
        assert "rtsp://***@127.0.0.1" in blob   # the source is shown, redacted
        assert PASSWORD not in blob and f"{USER}:" not in blob
    finally:
        notify.close()


def test_camera_back_with_another_size_finalises_the_recording_at_the_drop(
        tmp_path: Path, cameras: list[RtspCamera], daemon_factory: Any) -> None:
    """One MP4 track cannot change size: the recording ends cleanly at the drop with every
    frame it had, and the next recording takes the new size."""
    cam = RtspCamera(tmp_path, fps=FPS, gop=FPS)
    cameras.append(cam)
    cam.start()
    cfg = tmp_path / "climbd.toml"
    cfg.write_text(f'[capture]\nsource = "{cam.url()}"\nretry_max_s = 4.0\n'
                   '[video]\nencoder = "copy"\n[pose]\nenabled = false\n')
    d = daemon_factory(cam.url(), "--config", str(cfg), loop=False)
    d.wait_ready(60, capture=False)
    wait_for(lambda: _health(d)["capture"]["frames"] > 2 * FPS, 30, "capture running")
    status, started = d.post("/api/recordings/start", {"pre_roll_s": 0})
    assert status == 201, started
    wait_for(lambda: _health(d)["recording"]["frames"] >= 2 * FPS, 10, "2 s recorded")
    cam.kill()
    wait_for(lambda: _health(d)["capture"]["state"] == "lost", 20, "capture lost")
    had = _health(d)["recording"]["frames"]
    cam.args.update(width=480, height=272)
    cam.start()
    wait_for(lambda: _health(d)["recording"]["state"] == "idle", 40, "recording finalised")
    status, done = d.get(f"/api/sessions/{started['id']}")
    assert status == 200 and done["status"] == "completed", done
    assert done["frame_count"] == had and (done["width"], done["height"]) == (640, 360)
    video = d.state_dir / "sessions" / str(started["id"]) / "video.mp4"
    assert probe(video).frames == had
    assert "different video parameters" in d.log_path.read_text()
    status, again = d.post("/api/recordings/start", {"pre_roll_s": 0})
    assert status == 201 and (again["width"], again["height"]) == (480, 272), again
    status, again = d.post("/api/recordings/stop")
    assert status == 200 and again["status"] == "completed", again


class MjpegServer:
    """An HTTP MJPEG camera (``multipart/x-mixed-replace`` JPEGs, as many IP cameras and
    ESP32-CAMs serve) on 127.0.0.1, 15 frames/s; :meth:`stop` drops every connection."""

    def __init__(self, port: int = 0, fps: float = 15.0):
        import http.server

        import cv2
        import numpy as np

        frames = []
        for i in range(15):
            img = np.zeros((240, 320, 3), np.uint8)
            cv2.circle(img, (20 + i * 20, 120), 15, (0, 255, 255), -1)
            frames.append(cv2.imencode(".jpg", img)[1].tobytes())
        stop = self._stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in itertools.count():
                    if stop.wait(1 / fps):
                        return
                    jpg = frames[i % len(frames)]
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                                         + jpg + b"\r\n")
                    except OSError:
                        return

            def log_message(self, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_http_mjpeg_camera_that_goes_away_is_lost_and_comes_back() -> None:
    server = MjpegServer()
    port = server.port
    url = f"http://127.0.0.1:{port}/video.mjpg?user=admin&pwd=hunter2"
    cfg = CaptureConfig(source=url, retry_initial_s=0.5, retry_max_s=2.0, stall_timeout_s=3.0)
    got: list[Frame] = []
    worker = CaptureWorker(lambda n: open_source(url, cfg, n), got.append, cfg)
    worker.start()
    try:
        wait_for(lambda: len(got) >= 15, 20, "MJPEG frames")
        assert got[-1].image is not None and got[-1].image.width == 320
        server.stop()   # the camera goes away: end of the HTTP stream
        wait_for(lambda: worker.state is CaptureState.LOST, 15, "lost")
        assert worker.state is not CaptureState.ENDED
        assert "hunter2" not in (worker.error or "") and "pwd=***" in (worker.error or ""), \
            worker.error
        n = len(got)
        server = MjpegServer(port)
        wait_for(lambda: worker.state is CaptureState.RUNNING and len(got) > n + 15, 30,
                 "back")
        assert [f.number for f in got] == list(range(len(got)))
    finally:
        worker.stop()
        server.stop()
