"""Pose backfill benchmark (issue 13): prints one JSON object.

Two parts, chosen with ``--part`` (default ``ratio``):

- ``ratio``: the real daemon in this process on a paced file source (``--clip``, looped, like
  a camera). Side by side in one run, alternating windows of ``--window`` s (``--rounds``
  pairs): live pose frames/s with no backfill running, and with the backfill worker process
  (nice 19, SCHED_IDLE, last CPU) filling a session made from the clip. Reports
  ``live_pose_fps_without`` / ``_with`` (medians), ``ratio`` (target >= 0.95) and the
  backfill's own frames/s while live pose runs (``backfill_fps``).
- ``appliance``: the must-show run. ``climbd run`` pinned to one core (``taskset -c 0``) on a
  1280x720 30 fps source made from ``climb_steepwall_static.mp4`` (looped 3x, scaled to 720
  rows, padded to 1280, 30 fps); a ``--record-s`` (20) s recording; ``GET /api/health`` polled
  every 0.2 s from the start to the end of the backfill (p50/p95/max ms); after the stop, the
  time until the session is ``complete`` (target <= 300 s), frames kept vs expected, and
  pose coverage (target >= 0.95 of the frames: the clip has a climber in all).

Usage::

    uv run python bench/bench_backfill.py --part ratio --window 10 --rounds 2
    uv run python bench/bench_backfill.py --part appliance --record-s 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import stop_process

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from climbd.backfill.service import PoseBackfill  # noqa: E402
from climbd.config import Config  # noqa: E402
from climbd.daemon import Daemon  # noqa: E402
from climbd.statedir import StateDir  # noqa: E402
from climbd.storage import Database, finalize  # noqa: E402
from climbd.visibility import SYSTEM, viewing  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"


async def _session_from(db: Database, state: Path, clip: Path) -> int:
    rec = await db.create_session(name="bench", width=1, height=1, fps=30)
    video = StateDir(state).video(rec.id)
    video.parent.mkdir(parents=True, exist_ok=True)
    info = await asyncio.to_thread(finalize, clip, video)
    await db.finish_session(rec.id, status="completed", frame_count=info.frames,
                            duration_s=info.duration_s,
                            video_path=str(video.relative_to(state)))
    return rec.id


async def _pose_fps(daemon: Daemon, seconds: float) -> float:
    n0, t0 = daemon.pipeline.pose_results, time.monotonic()
    await asyncio.sleep(seconds)
    return (daemon.pipeline.pose_results - n0) / (time.monotonic() - t0)


async def ratio(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        config = Config.model_validate({
            "capture": {"source": str(args.clip), "loop": True},
            "server": {"host": "127.0.0.1", "port": 0}})
        daemon = Daemon(config, state)
        await daemon.start()
        try:
            with viewing(SYSTEM):
                fill = PoseBackfill(daemon.db, state, config.pose)
                await asyncio.sleep(5.0)  # warm up: model loaded, tracking settled
                without, with_, fill_fps, whole = [], [], [], []
                for _ in range(args.rounds):
                    without.append(await _pose_fps(daemon, args.window))
                    sid = await _session_from(daemon.db, state, args.clip)
                    fill.frames_done = 0
                    task = asyncio.create_task(fill.fill(sid))
                    while fill.frames_done == 0 and not task.done():  # noqa: ASYNC110
                        await asyncio.sleep(0.1)   # the worker is loading its model
                    with_.append(await _pose_fps(daemon, args.window))
                    fill_fps.append(fill.fps)
                    whole.append(not task.done())  # the fill ran through the whole window
                    await fill.close()
                    fill._closing = False
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            await daemon.stop()
    a, b = statistics.median(without), statistics.median(with_)
    return {"part": "ratio", "clip": args.clip.name, "window_s": args.window,
            "rounds": args.rounds, "live_pose_fps_without": round(a, 2),
            "live_pose_fps_with": round(b, 2), "ratio": round(b / a, 3) if a else None,
            "ratio_target": 0.95, "backfill_fps": round(statistics.median(fill_fps), 2),
            "windows_without": [round(x, 2) for x in without],
            "windows_with": [round(x, 2) for x in with_],
            "fill_ran_whole_window": whole, "cpus": os.cpu_count()}


def _make_720p(out: Path) -> None:
    src = MEDIA / "climb_steepwall_static.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", "2", "-i", str(src), "-vf",
         "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-r", "30", "-c:v", "libx264", "-preset",
         "veryfast", "-g", "30", "-bf", "0", "-an", str(out)], check=True)


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def appliance(args: argparse.Namespace) -> dict[str, Any]:
    from bench.bench_live import _admin_token, _free_port
    from tests.conftest import http

    tmp = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        source = tmp / "wall720p30.mp4"
        _make_720p(source)
        port = _free_port()
        log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "climbd", "run", "--source", str(source), "--loop",
               "--state-dir", str(tmp / "state"), "--host", "127.0.0.1", "--port", str(port)]
        if shutil.which("taskset") and args.cpu >= 0:
            cmd = ["taskset", "-c", str(args.cpu), *cmd]
        daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                  env={**os.environ, "GLOG_minloglevel": "2"})
        base = f"http://127.0.0.1:{port}"
        try:
            token = _admin_token(tmp / "state", 120)
            hdr = {"Authorization": f"Bearer {token}"}

            def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                return http(method, base + path, body, headers=hdr)

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status, h = call("GET", "/api/health")
                if status == 200 and h.get("pose", {}).get("fps", 0) > 0:
                    break
                time.sleep(0.5)
            time.sleep(3.0)   # tracking settled
            lat: list[float] = []

            def poll(until: float) -> None:
                while time.monotonic() < until:
                    t0 = time.perf_counter()
                    call("GET", "/api/health")
                    lat.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.2)

            status, rec = call("POST", "/api/recordings/start", {"pre_roll_s": 0})
            assert status == 201, rec
            poll(time.monotonic() + args.record_s)
            status, stopped = call("POST", "/api/recordings/stop")
            assert status == 200, stopped
            t_stop = time.monotonic()
            rec_lat = list(lat)
            done: dict[str, Any] = {}
            while time.monotonic() - t_stop < args.complete_within:
                poll(time.monotonic() + 1.0)
                status, done = call("GET", f"/api/sessions/{stopped['id']}")
                if done.get("pose_status") == "complete":
                    break
            complete_s = time.monotonic() - t_stop
        finally:
            stop_process(daemon, log)
        expected = round(stopped["duration_s"] * 30)
        return {
            "part": "appliance", "cpu": args.cpu, "source": "1280x720 30 fps",
            "record_s": args.record_s, "frames": stopped["frame_count"],
            "frames_expected_from_duration": expected,  # duration x 30 fps: no frame dropped
            "live_frames_analyzed": stopped["frames_analyzed"],
            "live_pose_coverage": round(stopped["frames_with_pose"]
                                        / max(1, stopped["frame_count"]), 4),
            "pose_status": done.get("pose_status"),
            "complete_after_stop_s": round(complete_s, 1),
            "complete_target_s": 300,
            "final_pose_coverage": round(done.get("frames_with_pose", 0)
                                         / max(1, done.get("frame_count", 1)), 4),
            "coverage_target": 0.95,
            "health_ms_recording": {"p50": round(_p(rec_lat, 0.5), 1),
                                    "p95": round(_p(rec_lat, 0.95), 1),
                                    "max": round(max(rec_lat), 1), "n": len(rec_lat)},
            "health_ms_whole_run": {"p50": round(_p(lat, 0.5), 1),
                                    "p95": round(_p(lat, 0.95), 1),
                                    "max": round(max(lat), 1), "n": len(lat)},
            "health_p95_target_ms": 250,
            "loadavg": os.getloadavg(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("ratio", "appliance"), default="ratio")
    ap.add_argument("--clip", type=Path, default=MEDIA / "climb_steepwall_static.mp4")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--record-s", type=float, default=20.0)
    ap.add_argument("--cpu", type=int, default=0, help="taskset core (-1: no pinning)")
    ap.add_argument("--complete-within", type=float, default=300.0)
    args = ap.parse_args()
    out = asyncio.run(ratio(args)) if args.part == "ratio" else appliance(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
