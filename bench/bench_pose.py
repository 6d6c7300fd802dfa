"""Pose backends side by side (issue 17): prints one JSON object.

Runs BlazePose GHUM Full over every frame of one clip (``climbd.ingest.decode_rgb_frames``,
the frames ingest gives the model) with each backend, one process per backend, one after the
other in this run, and reports for each:

- ``fps``: frames per second of ``PoseEstimator.process`` alone (frames pre-decoded), the
  median over ``--repeats`` runs made round-robin (backend A, B, C, A, B, C, ...) so that
  load from other processes hits every backend alike, and ``ms_per_frame`` (median frame);
- ``frames_with_pose``;
- against the reference backend (``solutions``, mediapipe 0.10.18, what climbd always had):
  ``missing``/``extra`` frames (a pose in one and not the other) and the image-landmark
  distance in pixels over frames where both found a pose: ``mean``, ``median``, ``p95``,
  ``max``, and the same over the *tracking* frames only (15 or more frames after the last
  frame without a pose or the clip start: both trackers settled after (re)acquiring the
  climber; while acquiring, the two graphs pick different regions of interest and can be
  far apart), plus ``fps_ratio`` = fps / reference fps.

Backends are named ``solutions``, ``tasks`` (this interpreter: mediapipe 0.10.18's Tasks API)
and ``tasks@PYTHON`` (the tasks backend in another interpreter's environment, e.g. a
Python 3.13 venv synced from the lock with mediapipe 1.x: ``tasks@/tmp/v313/bin/python``).
The tasks backend needs the model bundle: built here into a temporary directory with
``climbd.pose.bundle`` and passed as ``CLIMBD_POSE_TASK_FILE``.

Usage::

    uv run python bench/bench_pose.py [--clip PATH] [--backends solutions,tasks,tasks@PY]
        [--cpu 0]   # pin every worker to one core (taskset), as on a Pi core
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MEDIA = REPO.parent / "shared" / "media"
ACQUISITION_FRAMES = 15


def worker(backend: str, clip: Path, out: Path) -> None:
    """In this interpreter: run ``backend`` over ``clip``; save x/y px, times, sizes."""
    from climbd.ingest import decode_rgb_frames
    from climbd.pose import PoseEstimator

    frames = [rgb for _i, _t, rgb in decode_rgb_frames(clip)]
    h, w = frames[0].shape[:2]
    xy = np.full((len(frames), 33, 2), np.nan, np.float64)
    times = []
    with PoseEstimator(backend=backend) as est:
        t_all = time.perf_counter()
        for i, rgb in enumerate(frames):
            t0 = time.perf_counter()
            pose = est.process(rgb, i)
            times.append(time.perf_counter() - t0)
            if pose.image is not None:
                xy[i] = pose.image[:, :2] * (w, h)
        wall = time.perf_counter() - t_all
        used = est.backend
    import mediapipe

    np.savez(out, xy=xy, times=np.array(times), wall=wall, backend=used,
             mediapipe=mediapipe.__version__,
             python=".".join(map(str, sys.version_info[:3])))


def settled(found: np.ndarray, frames: int = ACQUISITION_FRAMES) -> np.ndarray:
    """Frames at least ``frames`` after the last frame without a pose (or the clip start):
    the ones where a tracker has settled after (re)acquiring the climber. ``found`` is a
    boolean per frame (both backends found a pose)."""
    out = np.zeros(len(found), bool)
    run = 0
    for i, f in enumerate(found):
        run = run + 1 if f else 0
        out[i] = run > frames
    return out


def _stats(ref: np.ndarray, xy: np.ndarray) -> dict[str, object]:
    ref_ok = ~np.isnan(ref).any(axis=(1, 2))
    ok = ~np.isnan(xy).any(axis=(1, 2))
    both = ref_ok & ok
    d = np.linalg.norm(ref[both] - xy[both], axis=2)  # (frames, 33) px
    keep = settled(both)
    late = np.linalg.norm(ref[keep] - xy[keep], axis=2)
    return {
        "missing": int((ref_ok & ~ok).sum()), "extra": int((ok & ~ref_ok).sum()),
        "px_mean": round(float(d.mean()), 2), "px_median": round(float(np.median(d)), 2),
        "px_p95": round(float(np.percentile(d, 95)), 2), "px_max": round(float(d.max()), 2),
        "tracking_frames": int(keep.sum()),
        "px_mean_tracking": round(float(late.mean()), 2) if late.size else None,
        "px_median_tracking": round(float(np.median(late)), 2) if late.size else None,
        "px_max_tracking": round(float(late.max()), 2) if late.size else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=MEDIA / "climb_steepwall_static.mp4")
    p.add_argument("--backends", default="solutions,tasks")
    p.add_argument("--cpu", type=int, default=None, help="pin workers to this core")
    p.add_argument("--repeats", type=int, default=3, help="runs per backend (round-robin)")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], args.clip, Path(args.worker[1]))
        return

    backends = [b for b in args.backends.split(",") if b]
    results: dict[str, dict[str, object]] = {}
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pose-") as tmp:
        env = dict(os.environ)
        if any(b.startswith("tasks") for b in backends):
            from climbd.pose import bundle

            task = Path(tmp) / bundle.TASK_FILE_NAME
            task.write_bytes(bundle.build_task())
            env[bundle.TASK_FILE_ENV] = str(task)
        fps: dict[str, list[float]] = {b: [] for b in backends}
        for run, name in enumerate(backends * args.repeats):
            if "error" in results.get(name, {}):
                continue
            backend, _, python = name.partition("@")
            out = Path(tmp) / f"{run}.npz"
            cmd = [python or sys.executable, str(Path(__file__).resolve()), "--clip",
                   str(args.clip), "--worker", backend, str(out)]
            if args.cpu is not None:
                cmd = ["taskset", "-c", str(args.cpu), *cmd]
            r = subprocess.run(cmd, env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO,
                               capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                results[name] = {"error": r.stderr[-1500:]}
                continue
            z = np.load(out)
            times = z["times"]
            fps[name].append(len(times) / float(z["wall"]))
            if name in arrays:
                continue  # landmarks: from the first run (every run gives the same)
            arrays[name] = z["xy"]
            results[name] = {
                "backend": str(z["backend"]), "mediapipe": str(z["mediapipe"]),
                "python": str(z["python"]), "frames": len(times),
                "frames_with_pose": int((~np.isnan(z["xy"]).any(axis=(1, 2))).sum()),
                "ms_per_frame": round(float(np.median(times)) * 1000, 2),
            }
        for name, values in fps.items():
            if values:
                results[name]["fps"] = round(float(np.median(values)), 2)
                results[name]["fps_runs"] = [round(v, 2) for v in values]
    ref_name = next((b for b in backends if b == "solutions"), None)
    if ref_name in arrays:
        ref_fps = float(results[ref_name]["fps"])  # type: ignore[arg-type]
        for name, xy in arrays.items():
            if name != ref_name:
                results[name]["vs_solutions"] = _stats(arrays[ref_name], xy)
                results[name]["fps_ratio"] = round(
                    float(results[name]["fps"]) / ref_fps, 3)  # type: ignore[arg-type]
    print(json.dumps({"bench": "pose_backends", "clip": args.clip.name, "cpu": args.cpu,
                      "repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
