"""Core pipeline benchmark (issue 2): prints one JSON object.

Measured side by side in one run, on the real clips in ../shared/media:

- ``ingest_vs_model``: ``climbd ingest`` frames/s against the pose model's own frames/s on the
  same, pre-decoded frames (interleaved model, ingest, model, ingest; medians). Target ≥ 0.85.
- ``pose_bytes_per_frame``: stored pose bytes (chunk blobs) per frame with a pose.
- ``live``: a live recording of ``--record-s`` seconds from a paced file source through the
  real daemon: video bytes per second, CPU seconds per recorded second (process CPU time
  over wall time while recording), pose coverage of the recorded frames.
- ``peak_rss_mb``: the process's peak resident set size.

Usage: ``uv run python bench/bench_core.py [--clip PATH] [--repeats 2] [--record-s 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from climbd.config import Config  # noqa: E402
from climbd.daemon import Daemon  # noqa: E402
from climbd.ingest import decode_rgb_frames, ingest_file  # noqa: E402
from climbd.pose import PoseEstimator  # noqa: E402
from climbd.statedir import StateDir  # noqa: E402
from climbd.storage import Database  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"


def model_fps(frames: list) -> float:  # type: ignore[type-arg]
    with PoseEstimator() as est:
        t0 = time.perf_counter()
        for i, rgb in enumerate(frames):
            est.process(rgb, i)
        return len(frames) / (time.perf_counter() - t0)


async def ingest_fps(clip: Path, state: Path) -> tuple[float, int, int]:
    state.mkdir(parents=True, exist_ok=True)
    db = await Database.open(StateDir(state).db)
    try:
        t0 = time.perf_counter()
        res = await ingest_file(clip, db, state)
        dt = time.perf_counter() - t0
    finally:
        await db.close()
    con = sqlite3.connect(StateDir(state).db)
    blob_bytes = con.execute("SELECT COALESCE(SUM(length(blob)), 0) FROM pose_chunks "
                             "WHERE session_id = ?", (res.id,)).fetchone()[0]
    con.close()
    return res.frames / dt, blob_bytes, res.frames_with_pose


async def live(clip: Path, state: Path, record_s: float) -> dict[str, float]:
    config = Config.model_validate({
        "capture": {"source": str(clip), "loop": True},
        "server": {"host": "127.0.0.1", "port": 0},
    })
    daemon = Daemon(config, state)
    await daemon.start()
    try:
        await asyncio.sleep(3.0)  # warm up: model loaded, tracking settled
        cpu0 = time.process_time()
        t0 = time.monotonic()
        await daemon.recorder.start(pre_roll_s=0)
        await asyncio.sleep(record_s)
        rec = await daemon.recorder.stop()
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        video = state / (rec.video_path or "")
        return {
            "recorded_s": round(rec.duration_s, 3),
            "frames": rec.frame_count,
            "pose_coverage": round(rec.frames_with_pose / max(1, rec.frame_count), 4),
            "video_bytes_per_s": round(video.stat().st_size / rec.duration_s),
            "cpu_s_per_recorded_s": round(cpu / wall, 3),
        }
    finally:
        await daemon.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=MEDIA / "climb_steepwall_static.mp4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--record-s", type=float, default=10.0)
    args = ap.parse_args()
    frames = [rgb for _, _, rgb in decode_rgb_frames(args.clip)]
    model, ingest = [], []
    blob_bytes = with_pose = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            model.append(model_fps(frames))
            fps, blob_bytes, with_pose = asyncio.run(ingest_fps(args.clip, Path(tmp) / f"i{r}"))
            ingest.append(fps)
        live_result = asyncio.run(live(args.clip, Path(tmp) / "live", args.record_s))
    m, i = statistics.median(model), statistics.median(ingest)
    print(json.dumps({
        "clip": args.clip.name,
        "frames": len(frames),
        "model_fps": round(m, 2),
        "ingest_fps": round(i, 2),
        "ingest_vs_model": round(i / m, 3),
        "ingest_vs_model_target": 0.85,
        "pose_bytes_per_frame": round(blob_bytes / max(1, with_pose), 1),
        "live": live_result,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
