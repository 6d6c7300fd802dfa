"""Passthrough vs encode (issue 16): daemon CPU on the same RTSP camera, side by side.

One real RTSP camera (gst-rtsp-server, ``tests/rtsp_camera.py``: live 1280x720 at 30 fps,
H.264 constrained baseline, a keyframe a second) is watched by two ``climbd run`` daemons
*at the same time*, identical but for ``video.encoder``: ``"copy"`` (passthrough: the
camera's packets are recorded/streamed as they are, frames decoded only for pose) and
``"libx264"`` (decode + our encode). Each phase warms up, then measures for ``--seconds``:

- ``cpu_cores``: CPU time (user + system) of the daemon process / wall time (1.0 = one
  core busy), from ``/proc`` via psutil;
- ``pose_fps``: pose results per second over the window (from ``/api/health``);
- ``capture_fps``: frames captured per second;
- ``cpu_ratio_copy_to_encode``: passthrough CPU / encode CPU in the same window.

Phase ``pose``: both with BlazePose on (``pose.workers = 1``); phase ``video_only``: pose
off, isolating the video path (decode vs decode + encode). The camera server's own CPU
(its x264 encode) is not counted: it stands in for the camera's hardware encoder.

Usage: ``uv run python bench/bench_passthrough.py [--seconds 30] [--warmup 10]``
(needs the Debian packages scripts/setup installs for the RTSP server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import DaemonProcess  # noqa: E402
from tests.rtsp_support import RtspCamera, rtsp_server_available  # noqa: E402


def _health(d: DaemonProcess) -> dict[str, Any]:
    status, body = d.get("/api/health", timeout=10)
    if status != 200:
        raise RuntimeError(f"health {status}: {body!r}")
    return dict(body)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def phase(root: Path, camera: RtspCamera, pose: bool, seconds: float, warmup: float
          ) -> dict[str, Any]:
    daemons: dict[str, DaemonProcess] = {}
    try:
        for encoder in ("copy", "libx264"):
            cfg = root / f"{encoder}-{pose}.toml"
            cfg.write_text(f'[capture]\nsource = "{camera.url()}"\n'
                           f'[video]\nencoder = "{encoder}"\n'
                           f'[pose]\nenabled = {"true" if pose else "false"}\nworkers = 1\n')
            daemons[encoder] = DaemonProcess(root / f"state-{encoder}-{pose}", camera.url(),
                                             "--config", str(cfg), loop=False)
        for d in daemons.values():
            d.wait_ready(120, capture=pose)
        deadline = time.monotonic() + 30
        while any(_health(d)["capture"]["state"] != "running" for d in daemons.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("capture not running")
            time.sleep(0.5)
        time.sleep(warmup)
        procs = {k: psutil.Process(d.proc.pid) for k, d in daemons.items()}
        start = {k: (_cpu(procs[k]), _health(d)) for k, d in daemons.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        out: dict[str, Any] = {}
        for k, d in daemons.items():
            cpu0, h0 = start[k]
            h1 = _health(d)
            out[k] = {
                "cpu_cores": round((_cpu(procs[k]) - cpu0) / wall, 3),
                "pose_fps": round((h1["pose"]["results"] - h0["pose"]["results"]) / wall, 2),
                "capture_fps": round((h1["capture"]["frames"] - h0["capture"]["frames"])
                                     / wall, 2),
                "video_mode": h1["video"]["mode"],
                "encoded_frames": h1["video"]["encoded"] - h0["video"]["encoded"],
                "encode_ms_mean": h1["video"]["encode_ms_mean"],
            }
        out["cpu_ratio_copy_to_encode"] = round(
            out["copy"]["cpu_cores"] / max(out["libx264"]["cpu_cores"], 1e-9), 3)
        out["seconds"] = round(wall, 1)
        return out
    finally:
        for d in daemons.values():
            d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--phases", default="pose,video_only")
    args = p.parse_args()
    why = rtsp_server_available()
    if why:
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="bench-passthrough-") as tmp:
        root = Path(tmp)
        camera = RtspCamera(root, width=1280, height=720, fps=30, gop=30, bitrate=3000)
        camera.start()
        try:
            result: dict[str, Any] = {
                "stream": {"width": 1280, "height": 720, "fps": 30, "gop_frames": 30,
                           "profile": "constrained baseline", "transport": "rtsp/tcp"},
                "cpu_count": psutil.cpu_count(),
            }
            for name in args.phases.split(","):
                result[name] = phase(root, camera, name == "pose", args.seconds, args.warmup)
        finally:
            camera.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
