"""Shared by the benchmarks that ask "does X starve live capture and pose?" (bench_export,
bench_archive): the real live pipeline on a clip paced like a camera, warmed up, and a meter
of its counters (pose results/s, capture fps, frames the pose stage skipped, inference time)
over a window.

Usage::

    async with live_pipeline(clip) as pipeline:
        before = await window(pipeline, 15.0)       # {"pose_fps": ..., "process_cpu_s": ...}
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from climbd.config import Config
from climbd.pipeline import Pipeline

#: The pipeline is warm once this many pose results came (the model is loaded, results flow).
WARM_POSE_RESULTS = 30
#: How long the warm-up may take at most, s.
WARM_TIMEOUT_S = 30.0


def load_avg() -> list[float]:
    """The 1/5/15-minute load averages, rounded (reported beside every figure: the machines
    are shared)."""
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.asynccontextmanager
async def live_pipeline(clip: Path) -> AsyncIterator[Pipeline]:
    """The live pipeline (capture of ``clip``, looping, paced like a camera → H.264 encode ‖
    BlazePose) started in this process and warmed up (:data:`WARM_POSE_RESULTS` results,
    then 1 s more); stopped (in a thread) on exit."""
    config = Config.model_validate({"capture": {"source": str(clip), "loop": True}})
    pipeline = Pipeline(config, asyncio.get_running_loop())
    pipeline.start()
    try:
        for _ in range(int(WARM_TIMEOUT_S / 0.05)):  # polled: pose results are a counter
            if pipeline.pose_results > WARM_POSE_RESULTS:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        yield pipeline
    finally:
        await asyncio.to_thread(pipeline.stop)


class Meter:
    """Counters of the live pipeline between two instants (:meth:`start`, :meth:`stop`)."""

    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {"t": time.monotonic(), "pose": self.p.pose_results,
                "frames": self.p.capture.frames, "skipped": self.p.pose_skipped,
                "dropped": self.p.video_dropped, "encoded": self.p.encoder.frames}

    def start(self) -> None:
        self._start = self._now()
        self.p.inference_ms.clear()

    def stop(self) -> dict[str, Any]:
        """Figures since :meth:`start`: rates per second, counts, inference ms p50/p95, and
        the ``raw`` counts (for summing slices)."""
        end = self._now()
        dt = end["t"] - self._start["t"]
        d = {k: end[k] - self._start[k] for k in end}
        inf = list(self.p.inference_ms)
        return {
            "raw": {"seconds": dt, "pose": d["pose"], "frames": d["frames"],
                    "skipped": d["skipped"], "dropped": d["dropped"]},
            "seconds": round(dt, 2),
            "pose_fps": round(d["pose"] / dt, 2),
            "capture_fps": round(d["frames"] / dt, 2),
            "encoded_fps": round(d["encoded"] / dt, 2),
            "pose_skipped_frames": int(d["skipped"]),
            "video_dropped_frames": int(d["dropped"]),
            "inference_ms_p50": round(statistics.median(inf), 2) if inf else None,
            "inference_ms_p95": round(sorted(inf)[int(0.95 * (len(inf) - 1))], 2)
            if inf else None,
        }


async def window(pipeline: Pipeline, seconds: float) -> dict[str, Any]:
    """The pipeline's figures (:meth:`Meter.stop`, without ``raw``) over ``seconds`` s, plus
    this process's CPU time in that window (``process_cpu_s``)."""
    meter = Meter(pipeline)
    meter.start()
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    m = meter.stop()
    m.pop("raw")
    m["process_cpu_s"] = round(time.process_time() - cpu0, 2)
    return m


def judge(result: dict[str, Any], value: float, base: float, target: float) -> None:
    """Write the verdict into ``result``: ``ratio`` = value / base (None when the baseline
    is 0), ``target_ratio``, ``pass`` (ratio >= target) and ``load_avg_after``."""
    result["ratio"] = round(value / base, 3) if base else None
    result["target_ratio"] = target
    result["pass"] = result["ratio"] is not None and result["ratio"] >= target
    result["load_avg_after"] = load_avg()
