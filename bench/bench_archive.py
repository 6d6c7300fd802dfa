"""Archive benchmark: does an S3 upload starve live capture and pose? What does it cost?

In one run, with the real live pipeline (capture of a clip paced like a camera → H.264
encode ‖ MediaPipe BlazePose Full) in this process, three windows back to back:
``baseline_before`` (no upload), ``with_upload`` (the :class:`climbd.archive.Archiver` at the
shipped priority — ``archive.nice`` 19 + SCHED_IDLE — uploading sessions with
``--video-mb`` MiB videos to a moto_server on 127.0.0.1), ``baseline_after``. ``ratio`` =
pose fps with upload / the mean of the two baselines (target >= 0.95; exit code 0 when
met). ``upload.cpu_s_per_100mb``: CPU time of this process during the upload window minus
the baseline's, per 100 MiB sent (the S3 server's own CPU is reported apart: on a real
deployment it runs on another machine). Prints one JSON object. Example::

    uv run python bench/bench_archive.py --window 15

Numbers depend on what else runs on the machine: ``load_avg_*`` is reported with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from live_meter import judge, live_pipeline, load_avg, window  # noqa: E402

from climbd.archive import Archiver  # noqa: E402
from climbd.config import ArchiveConfig  # noqa: E402
from climbd.statedir import StateDir  # noqa: E402
from climbd.storage import Database  # noqa: E402
from climbd.visibility import SYSTEM, viewing  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "media" / "climb_steepwall_static.mp4"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    clip = Path(args.clip)
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = _port()
    with tempfile.TemporaryDirectory(prefix="climbd-bench-archive-") as tmp:
        server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],  # noqa: ASYNC220
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = Path(tmp) / "state"
        state.mkdir()
        db = await Database.open(StateDir(state).db)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                await asyncio.sleep(0.05)
            boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                         aws_access_key_id="k", aws_secret_access_key="s"
                         ).create_bucket(Bucket="bench")
            for i in range(args.sessions):
                rec = await db.create_session(name=f"s{i}", width=640, height=480, fps=30)
                d = state / "sessions" / str(rec.id)
                d.mkdir(parents=True)
                with open(d / "video.mp4", "wb") as f:  # noqa: ASYNC230 - set-up, not timed
                    for _ in range(args.video_mb):
                        f.write(os.urandom(1 << 20))
                await db.finish_session(rec.id, status="completed", frame_count=1,
                                        duration_s=1.0,
                                        video_path=f"sessions/{rec.id}/video.mp4")
                async with db.transaction("no pose to backfill") as conn:  # as the daemon's
                    await conn.execute(  # backfill leaves a session without pose
                        "UPDATE sessions SET pose_status = 'complete' WHERE id = ?", (rec.id,))
            async with live_pipeline(clip) as pipeline:
                result: dict[str, Any] = {
                    "clip": clip.name, "cores": os.cpu_count(), "window_s": args.window,
                    "load_avg_before": load_avg()}
                result["baseline_before"] = await window(pipeline, args.window)
                archiver = Archiver(ArchiveConfig(
                    enabled=True, endpoint_url=url, bucket="bench", access_key_id="k",
                    secret_access_key="s"), db, state, "bench")  # shipped nice 19
                server_cpu0 = _proc_cpu(server.pid)
                with viewing(SYSTEM):
                    task = asyncio.create_task(archiver.run())
                result["with_upload"] = await window(pipeline, args.window)
                sent = archiver.uploaded_bytes
                result["archiver_status"] = archiver.status()
                server_cpu = _proc_cpu(server.pid) - server_cpu0
                task.cancel()
                await archiver.close()
                result["baseline_after"] = await window(pipeline, args.window)
            base = (result["baseline_before"]["pose_fps"]
                    + result["baseline_after"]["pose_fps"]) / 2
            base_cpu = (result["baseline_before"]["process_cpu_s"]
                        + result["baseline_after"]["process_cpu_s"]) / 2
            extra_cpu = result["with_upload"]["process_cpu_s"] - base_cpu
            mib = sent / (1 << 20)
            result["upload"] = {
                "mib_sent": round(mib, 1), "mib_per_s": round(mib / args.window, 1),
                "extra_process_cpu_s": round(extra_cpu, 2),
                "cpu_s_per_100mb": round(extra_cpu / mib * 100, 2) if mib else None,
                "s3_server_cpu_s": round(server_cpu, 2), "worker_priority": archiver.priority}
            judge(result, result["with_upload"]["pose_fps"], base, 0.95)
            return result
        finally:
            await db.close()
            server.terminate()
            server.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip", default=str(DEFAULT_CLIP))
    p.add_argument("--window", type=float, default=15.0, help="seconds per window")
    p.add_argument("--sessions", type=int, default=6, help="sessions to upload")
    p.add_argument("--video-mb", type=int, default=100, help="MiB per session video")
    args = p.parse_args(argv)
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
