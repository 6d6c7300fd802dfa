"""Export benchmark: does a burned-in export starve live capture and pose? How fast is it?

In one run, side by side, with the real live pipeline (capture of a clip paced like a
camera → H.264 encode ‖ MediaPipe BlazePose Full) running in this process:

- ``baseline`` vs ``with_export``: live pose results per second (and capture fps, frames
  the pose stage had to skip, inference time) without and with burned-in skeleton exports
  (``kind: overlay``) of a session running back to back in the export worker at the
  shipped priority (nice 19 + SCHED_IDLE + idle I/O class: the ``[export]`` defaults), and
  the export speed in frames/s while live capture and pose run. The two conditions
  alternate in ``--rounds`` slices (the worker is paused with SIGSTOP during baseline
  slices), so a change in the rest of the machine's load hits both alike.
- ``--compare-normal``: the same again with the worker at nice 0 and the normal scheduler
  (``baseline_2`` vs ``with_export_normal_priority``), to show what the low priority buys.
- ``export_alone``: one overlay export with the live pipeline stopped (worker start-up
  included).

The session is ``--clip`` ingested with pose on every frame (as ``climbd ingest``) into a
temporary state directory. ``ratio`` = pose fps with export / pose fps without (target
>= 0.9); exit code 0 when it is met. Prints one JSON object. Example::

    uv run python bench/bench_export.py --window 20 --compare-normal

Numbers depend on what else runs on the machine: ``load_avg_*`` is reported with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from live_meter import Meter, judge, live_pipeline, load_avg

from climbd.config import ExportConfig
from climbd.export.jobs import ExportManager
from climbd.ingest import ingest_file
from climbd.pipeline import Pipeline
from climbd.statedir import StateDir
from climbd.storage import Database
from climbd.visibility import SYSTEM, viewing

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "climb_steepwall_static.mp4"


class ExportRunner:
    """Overlay exports of one session back to back, which can be paused and resumed.

    Pausing sends SIGSTOP to the running worker (and holds back the next one), so baseline
    and export windows can alternate under the same background load of the machine.
    """

    def __init__(self, manager: ExportManager, session_id: int):
        self.manager = manager
        self.session_id = session_id
        self.completed_frames = 0
        self.completed_jobs = 0
        self._running = asyncio.Event()
        self._current: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.priority: dict[str, Any] | None = None

    def frames(self) -> int:
        """Frames exported so far (finished jobs plus the running job's progress)."""
        live = self.manager.progress(self._current)["frames_done"] if self._current else 0
        return self.completed_frames + (live or 0)

    def _signal(self, sig: int) -> None:
        job = self.manager._jobs.get(self._current) if self._current else None
        if job is not None and job.process is not None and job.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.process.pid, sig)

    def pause(self) -> None:
        self._running.clear()
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._running.set()
        self._signal(signal.SIGCONT)

    async def _loop(self) -> None:
        while True:
            await self._running.wait()
            rec = await self.manager.submit(self.session_id, "overlay")
            self._current = rec.id
            done = await self.manager.wait(rec.id)
            self.priority = self.priority or self.manager.status()["priority"] or None
            self._current = None
            if done.status != "done":
                raise RuntimeError(f"export {rec.id} {done.status}: {done.error}")
            self.completed_frames += done.frames
            self.completed_jobs += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._signal(signal.SIGCONT)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.manager.close()


async def _interleaved(pipeline: Pipeline, runner: ExportRunner, window: float,
                       rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate baseline and export slices (``window / rounds`` s each); returns the
    pipeline figures of both conditions (and the export speed of the export slices)."""
    slice_s = window / rounds
    sums: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    inference: dict[str, list[float]] = {"off": [], "on": []}
    exported = 0
    runner.start()
    for i in range(2 * rounds):
        state = "on" if i % 2 else "off"
        if state == "on":
            runner.resume()
        else:
            runner.pause()
        await asyncio.sleep(0.3)  # let the switch settle (worker stopped / resumed)
        meter = Meter(pipeline)
        meter.start()
        f0 = runner.frames()
        await asyncio.sleep(slice_s)
        m = meter.stop()
        runner.priority = runner.priority or runner.manager.status()["priority"] or None
        inference[state] += list(pipeline.inference_ms)
        if state == "on":
            exported += runner.frames() - f0
        acc = sums[state]
        for key in ("seconds", "pose", "frames", "skipped", "dropped"):
            acc[key] = acc.get(key, 0.0) + m["raw"][key]
    await runner.stop()

    def figures(state: str) -> dict[str, Any]:
        acc, inf = sums[state], sorted(inference[state])
        return {
            "seconds": round(acc["seconds"], 2),
            "pose_fps": round(acc["pose"] / acc["seconds"], 2),
            "capture_fps": round(acc["frames"] / acc["seconds"], 2),
            "pose_skipped_frames": int(acc["skipped"]),
            "video_dropped_frames": int(acc["dropped"]),
            "inference_ms_p50": round(statistics.median(inf), 2) if inf else None,
            "inference_ms_p95": round(inf[int(0.95 * (len(inf) - 1))], 2) if inf else None,
        }

    off, on = figures("off"), figures("on")
    on["export_fps"] = round(exported / sums["on"]["seconds"], 2)
    on["frames_exported"] = exported
    on["exports_completed"] = runner.completed_jobs
    on["worker_priority"] = runner.priority
    return off, on


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    clip = Path(args.clip)
    with tempfile.TemporaryDirectory(prefix="climbd-bench-export-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        db = await Database.open(StateDir(state).db)
        try:
            t = time.monotonic()
            ingested = await ingest_file(clip, db, state, name=clip.stem)
            ingest_s = time.monotonic() - t
            async with live_pipeline(clip) as pipeline:
                result: dict[str, Any] = {
                    "clip": clip.name,
                    "session": {"frames": ingested.frames, "duration_s": ingested.duration_s,
                                "frames_with_pose": ingested.frames_with_pose,
                                "ingest_s": round(ingest_s, 2)},
                    "cores": os.cpu_count(),
                    "window_s": args.window,
                    "rounds": args.rounds,
                    "load_avg_before": load_avg(),
                }
                low = ExportRunner(ExportManager(db, state, ExportConfig()), ingested.id)
                base, on = await _interleaved(pipeline, low, args.window, args.rounds)
                result["baseline"], result["with_export"] = base, on
                if args.compare_normal:
                    normal = ExportRunner(ExportManager(
                        db, state, ExportConfig(nice=0, idle_priority=False)), ingested.id)
                    base_n, on_n = await _interleaved(pipeline, normal, args.window,
                                                      args.rounds)
                    result["baseline_2"] = base_n
                    result["with_export_normal_priority"] = on_n
            alone = ExportManager(db, state, ExportConfig())
            t = time.monotonic()
            rec = await alone.submit(ingested.id, "overlay")
            rec = await alone.wait(rec.id)
            dt = time.monotonic() - t
            await alone.close()
            result["export_alone"] = {"frames": rec.frames, "seconds": round(dt, 2),
                                      "export_fps": round(rec.frames / dt, 2),
                                      "includes_worker_start": True}
            if args.compare_normal and result["baseline_2"]["pose_fps"]:
                result["ratio_normal_priority"] = round(
                    result["with_export_normal_priority"]["pose_fps"]
                    / result["baseline_2"]["pose_fps"], 3)
            judge(result, result["with_export"]["pose_fps"], result["baseline"]["pose_fps"], 0.9)
            return result
        finally:
            await db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default=str(DEFAULT_CLIP), help="clip for the live camera and "
                   "the exported session")
    p.add_argument("--window", type=float, default=15.0,
                   help="seconds measured per condition (with and without export)")
    p.add_argument("--rounds", type=int, default=5,
                   help="the window is split into this many alternating slices per condition")
    p.add_argument("--compare-normal", action="store_true",
                   help="also run the export at normal priority (nice 0, no SCHED_IDLE)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    with viewing(SYSTEM):  # a benchmark acts for the appliance (climbd.visibility)
        result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
