"""Live-view benchmark: CPU per viewer, landmark and video latency, landmark message size.

Runs ``climbd run`` on a clip (paced like a camera) with ICE host candidates restricted to
127.0.0.1, then, in one run, side by side:

- 0 viewers, 1 viewer, 4 viewers (``--viewers``): CPU of the daemon process, and of its
  event-loop thread alone (where every per-viewer cost lives: RTP packetizing, SRTP, DTLS,
  SCTP, the data channel; the encode and the pose model run on their own threads, and the
  pose thread's CPU varies with how much CPU the viewers in *this* process leave it);
- landmark latency: frame capture (the daemon's monotonic capture time, ``epoch + pts /
  90000`` from the hello message) to receipt by a loopback aiortc viewer, p50/p95;
- video glass-to-glass proxy: frame capture to the frame decoded in the first viewer (the
  others skip decoding unless ``--decode-all``: four H.264 decodes in this process would
  starve the daemon of CPU on a 2-core machine), p50/p95;
- bytes per landmark message;
- one *delayed* viewer (``POST /api/whep/delayed?delay_s=N``, ``--delayed N``; 0 = skip)
  measured in the same run right after the one-live-viewer phase: its CPU next to the live
  viewer's (``delayed_vs_live_cpu_pct_of_one_core``; target: at most 3 % of a core more,
  since the delayed view replays buffered packets and never encodes), and its lateness
  beyond N (latencies of that phase are reported minus N).

Viewers run in this process on the same 2-core machine, so latencies include their own
scheduling delays. Prints one JSON object. Example::

    uv run python bench/bench_live.py --duration 20 --viewers 1,4 --delayed 5
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
from procs import stop_process

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the test/bench WHEP client lives in tests/

from tests.whep_viewer import Viewer  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "media" / "climb_steepwall_static.mp4"
U32 = 0xFFFFFFFF


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    """(process CPU seconds, event-loop thread CPU seconds)."""
    t = proc.cpu_times()
    main = next((th for th in proc.threads() if th.id == proc.pid), None)
    return t.user + t.system, (main.user_time + main.system_time) if main else float("nan")


def _pct(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "n": len(values)}


def _playing(viewer: Viewer) -> bool:
    return (viewer.frames > 0 and viewer.hello is not None
            and viewer.hello.get("rtp_origin") is not None)


async def _join(http: aiohttp.ClientSession, decode: bool = True, path: str = "/api/whep"
                ) -> tuple[Viewer, str]:
    viewer = Viewer(host_candidates=["127.0.0.1"], decode=decode)
    async with http.post(path, data=await viewer.offer(),
                         headers={"Content-Type": "application/sdp"}) as r:
        if r.status != 201:
            raise RuntimeError(f"WHEP {r.status}: {await r.text()}")
        answer, location = await r.text(), r.headers["Location"]
    await viewer.accept(answer)
    return viewer, location


async def _phase(http: aiohttp.ClientSession, proc: psutil.Process, n: int, duration: float,
                 warmup: float, decode_all: bool, delay_s: float = 0.0) -> dict[str, Any]:
    path = f"/api/whep/delayed?delay_s={delay_s:g}" if delay_s else "/api/whep"
    joined = [await _join(http, decode=decode_all or i == 0, path=path) for i in range(n)]
    viewers = [v for v, _ in joined]
    for v in viewers:
        if not await v.wait_for(functools.partial(_playing, v), 20):
            raise RuntimeError("a viewer got no video")
    await asyncio.sleep(warmup)
    start_frames = [(v.frames, v.message_count) for v in viewers]
    t_start = time.monotonic()
    cpu0 = _cpu(proc)
    await asyncio.sleep(duration)
    cpu1 = _cpu(proc)
    wall = time.monotonic() - t_start
    async with http.get("/api/health") as r:
        health = await r.json()
    lm_lat: list[float] = []
    vid_lat: list[float] = []
    sizes: list[int] = []
    for v in viewers:
        assert v.hello is not None
        # capture time = epoch + pts / 90000; a delayed view is meant to be delay_s later
        epoch = float(v.hello["epoch"]) + float(v.hello.get("delay_s") or 0.0)
        origin = int(v.hello["rtp_origin"])
        for m in v.messages:
            if m.arrived >= t_start:
                lm_lat.append(m.arrived - (epoch + m.message.pts / 90000))
                sizes.append(m.size)
        for f in v.received if v is viewers[0] else ():  # the decoding viewer
            if f.arrived >= t_start:
                vid_lat.append(f.arrived - (epoch + ((f.rtp - origin) & U32) / 90000))
    frames = [v.frames - f for v, (f, _) in zip(viewers, start_frames, strict=True)]
    msgs = [v.message_count - m for v, (_, m) in zip(viewers, start_frames, strict=True)]
    for v, location in joined:
        async with http.delete(location):
            pass
        await v.close()
    return {
        "viewers": n,
        "kind": f"delayed {delay_s:g} s" if delay_s else "live",
        "machine_load_1m": round(os.getloadavg()[0], 2),  # other work on the shared cores
        "cpu_process_cores": round((cpu1[0] - cpu0[0]) / wall, 4),
        "cpu_event_loop_cores": round((cpu1[1] - cpu0[1]) / wall, 4),
        "pose_fps": health["pose"]["fps"],
        "capture_fps": health["capture"]["fps"],
        "frames_per_viewer_per_s": [round(f / wall, 1) for f in frames],
        "landmarks_per_viewer_per_s": [round(m / wall, 1) for m in msgs],
        "landmark_latency_ms": _pct(lm_lat),
        "video_glass_to_glass_proxy_ms": _pct(vid_lat),
        "landmark_bytes_mean": round(float(np.mean(sizes)), 1) if sizes else None,
        "landmark_bytes_max": max(sizes) if sizes else None,
    }


def _start_daemon(args: argparse.Namespace, tmp: Path, max_viewers: int
                  ) -> tuple[subprocess.Popen[bytes], str, Any]:
    port = _free_port()
    cfg = tmp / "climbd.toml"
    cfg.write_text('[webrtc]\nhost_candidates = ["127.0.0.1"]\n'
                   f"max_viewers = {max_viewers}\n"
                   f"[recording]\nbuffer_s = {max(30.0, args.delayed + 2):g}\n")
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - closed by main()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "climbd", "run", "--source", str(args.source), "--loop",
         "--state-dir", str(tmp / "state"), "--host", "127.0.0.1", "--port", str(port),
         "--config", str(cfg)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "GLOG_minloglevel": "2"})
    return daemon, f"http://127.0.0.1:{port}", log


def _admin_token(state_dir: Path, timeout: float = 60.0) -> str:
    """An admin API token from the daemon's local admin socket (as ``climbd token create``)."""
    from climbd.security.local import AdminClient, AdminSocketError

    client = AdminClient(state_dir / "admin.sock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(client.create_token("bench", "admin")["token"])
        except AdminSocketError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def measure(args: argparse.Namespace, daemon: subprocess.Popen[bytes], base: str,
                  counts: list[int], state_dir: Path) -> dict[str, Any]:
    proc = psutil.Process(daemon.pid)
    token = await asyncio.to_thread(_admin_token, state_dir)
    async with aiohttp.ClientSession(base_url=base,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
        deadline = time.monotonic() + 90
        while True:
            try:
                async with http.get("/api/health") as r:
                    h = await r.json()
                if h["capture"]["state"] == "running" and h["pose"]["results"] > 25:
                    break
            except (aiohttp.ClientError, ValueError):
                pass
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError("daemon did not start")
            await asyncio.sleep(0.3)
        await asyncio.sleep(args.warmup)
        phases = ([await _phase(http, proc, 0, args.duration, 0, args.decode_all)]
                  if args.baseline else [])
        delayed: dict[str, Any] | None = None
        for n in counts:
            phases.append(await _phase(http, proc, n, args.duration, args.warmup,
                                       args.decode_all))
            await asyncio.sleep(1.0)
            if n == 1 and args.delayed:  # side by side with the one live viewer
                delayed = await _phase(http, proc, 1, args.duration, args.warmup,
                                       args.decode_all, delay_s=args.delayed)
                await asyncio.sleep(1.0)
    by_n = {p["viewers"]: p for p in phases}
    result: dict[str, Any] = {
        "benchmark": "live",
        "source": str(args.source),
        "duration_s_per_phase": args.duration,
        "cpu_count": psutil.cpu_count(),
        "phases": phases,
        "landmark_message_bytes": {"detected": 280, "nothing_detected": 16,
                                   "hello_json": None},
    }
    lo, hi = min(counts), max(counts)
    if hi > lo and lo in by_n and hi in by_n:
        per_loop = (by_n[hi]["cpu_event_loop_cores"] - by_n[lo]["cpu_event_loop_cores"]) / (hi - lo)
        per_proc = (by_n[hi]["cpu_process_cores"] - by_n[lo]["cpu_process_cores"]) / (hi - lo)
        result["per_extra_viewer_cpu_pct_of_one_core"] = {
            "event_loop": round(per_loop * 100, 2),
            "process": round(per_proc * 100, 2),
            "target": 3.0,
            "meets_target": per_loop * 100 <= 3.0,
        }
    if 0 in by_n and 1 in by_n:
        result["first_viewer_cpu_pct_of_one_core"] = {
            "event_loop": round((by_n[1]["cpu_event_loop_cores"]
                                 - by_n[0]["cpu_event_loop_cores"]) * 100, 2),
            "process": round((by_n[1]["cpu_process_cores"]
                              - by_n[0]["cpu_process_cores"]) * 100, 2),
        }
    if delayed is not None and 1 in by_n:
        live1 = by_n[1]
        loop = (delayed["cpu_event_loop_cores"] - live1["cpu_event_loop_cores"]) * 100
        process = (delayed["cpu_process_cores"] - live1["cpu_process_cores"]) * 100
        result["delayed_phase"] = delayed
        result["delayed_vs_live_cpu_pct_of_one_core"] = {
            "delay_s": args.delayed,
            "event_loop": round(loop, 2),
            "process": round(process, 2),
            "target": 3.0,
            "meets_target": loop <= 3.0,
        }
    from climbd.streaming.landmarks import hello_message

    result["landmark_message_bytes"]["hello_json"] = len(hello_message(
        rtp_origin=4294967295, epoch=123456.123456, width=1280, height=720, fps=30.0))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--viewers", default="1,4", help="viewer counts to compare")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the 0-viewer phase")
    p.add_argument("--delayed", type=float, default=5.0,
                   help="seconds of delay of the delayed-viewer phase, run after the "
                   "one-live-viewer phase (0 = skip)")
    p.add_argument("--decode-all", action="store_true",
                   help="every viewer decodes H.264 (default: only the first; the others "
                   "count reassembled frames, so client decoding does not starve the daemon)")
    args = p.parse_args()
    counts = sorted({int(x) for x in args.viewers.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        daemon, base, log = _start_daemon(args, Path(tmp), max(counts) + 1)
        try:
            result = asyncio.run(measure(args, daemon, base, counts, Path(tmp) / "state"))
        finally:
            stop_process(daemon, log)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
