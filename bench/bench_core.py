"""Core pipeline benchmark (issue 2): prints one JSON object.

Measured side by side in one run, on the real clips in ../shared/media:

- ``ingest_vs_model``: ``climbd ingest`` frames/s against the pose model's own frames/s on the
  same, pre-decoded frames (interleaved model, ingest, model, ingest; medians). Target ≥ 0.85.
- ``pose_bytes_per_frame``: stored pose bytes (chunk blobs) per frame with a pose.
- ``db_bytes_per_analyzed_frame``: the whole catalog after one ingest of the clip — the
  database file and its WAL (every table, index and the empty schema's pages included) plus
  the session's frame-time table (``frames.f64``) — over the frames pose ran on
  (``frames_analyzed``). Target ≤ 1024. ``db_marginal_bytes_per_frame``: the same without
  the empty schema (what each further frame costs).
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
from climbd.replay.media import write_frame_table  # noqa: E402
from climbd.statedir import StateDir  # noqa: E402
from climbd.storage import Database  # noqa: E402
from climbd.visibility import SYSTEM, viewing  # noqa: E402

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


async def db_bytes(state: Path) -> dict[str, float]:
    """Bytes of the whole catalog (database + WAL + frame tables) per analysed frame."""
    paths = StateDir(state)
    db = await Database.open(paths.db)
    try:
        files = [paths.db, paths.db.with_name(paths.db.name + "-wal")]
        open_bytes = sum(f.stat().st_size for f in files if f.exists())
    finally:
        await db.close()
    on_disk = sum(f.stat().st_size for f in files if f.exists())
    con = sqlite3.connect(paths.db)
    rows = con.execute("SELECT id, frames_analyzed, video_path FROM sessions").fetchall()
    con.close()
    tables = 0
    for sid, _, video_path in rows:
        out = paths.frame_table(sid)
        write_frame_table(state / video_path, out)
        tables += out.stat().st_size
    analyzed = sum(r[1] for r in rows)
    with tempfile.TemporaryDirectory() as empty:
        e = await Database.open(Path(empty) / "c.db")
        await e.close()
        schema = (Path(empty) / "c.db").stat().st_size
    total = max(on_disk, open_bytes) + tables
    return {"db_bytes": total, "frames_analyzed": analyzed, "empty_schema_bytes": schema,
            "db_bytes_per_analyzed_frame": round(total / max(1, analyzed), 1),
            "db_marginal_bytes_per_frame": round((total - schema) / max(1, analyzed), 1)}


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
    with viewing(SYSTEM):  # the benchmark acts for the appliance (climbd.visibility)
        _main(args)


def _main(args: argparse.Namespace) -> None:
    frames = [rgb for _, _, rgb in decode_rgb_frames(args.clip)]
    model, ingest = [], []
    blob_bytes = with_pose = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            model.append(model_fps(frames))
            fps, blob_bytes, with_pose = asyncio.run(ingest_fps(args.clip, Path(tmp) / f"i{r}"))
            ingest.append(fps)
        storage = asyncio.run(db_bytes(Path(tmp) / "i0"))
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
        "storage": storage,
        "db_bytes_per_analyzed_frame": storage["db_bytes_per_analyzed_frame"],
        "db_bytes_per_analyzed_frame_target": 1024,
        "live": live_result,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
