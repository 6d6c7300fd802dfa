"""Live attempt detection cost (issue 12): prints one JSON object.

BlazePose runs once over a real clip (default ``climb_steepwall_static.mp4``); its results are
then fed, in a loop and timed with the process CPU clock, to :class:`AttemptDetector.update`
exactly as the live service feeds them (the clip replayed ``--loops`` times, times shifted
each loop so the detector sees one long stream with a landing and a lift-off per loop).

Figures:

- ``detector_us_per_frame``: CPU microseconds per pose result;
- ``core_fraction_at_30fps``: that cost × 30 frames/s (target ≤ 0.02 = 2 % of one core);
- ``ratio_to_pose_model``: detector cost / BlazePose inference per frame, measured in the
  same run (machine-independent: how much the detector adds to the pose stage);
- ``attempts_found``: attempts seen over the loops (sanity: the detector did its work).

Usage: ``uv run python bench/bench_attempts.py [--clip PATH] [--loops 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from climbd.attempts import AttemptDetector  # noqa: E402
from climbd.ingest import decode_rgb_frames  # noqa: E402
from climbd.pose import PoseEstimator  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=MEDIA / "climb_steepwall_static.mp4")
    ap.add_argument("--loops", type=int, default=20)
    args = ap.parse_args()
    poses = []
    width = height = 0
    with PoseEstimator() as est:
        for i, t, rgb in decode_rgb_frames(args.clip):
            poses.append(est.process(rgb, i, t))
            height, width = rgb.shape[:2]
    infer = statistics.median(p.inference_s for p in poses)
    period = poses[-1].timestamp + (poses[1].timestamp - poses[0].timestamp) + 3.0
    runs = []
    found = 0
    for _ in range(3):
        det = AttemptDetector(width / height)
        n = 0
        c0 = time.process_time()
        for k in range(args.loops):
            off = k * period
            for p in poses:
                det.update(p.timestamp + off, p.image)
                n += 1
            for j in range(75):  # 3 s of nobody between loops (25 fps)
                det.update(off + period - 3.0 + j / 25, None)
                n += 1
        runs.append((time.process_time() - c0) / n)
        found = len(det.finish())
    per_frame = statistics.median(runs)
    print(json.dumps({
        "clip": args.clip.name,
        "frames_fed": n,
        "detector_us_per_frame": round(per_frame * 1e6, 2),
        "core_fraction_at_30fps": round(per_frame * 30, 5),
        "target_core_fraction": 0.02,
        "pose_model_ms_per_frame": round(infer * 1e3, 2),
        "ratio_to_pose_model": round(per_frame / infer, 5),
        "attempts_found": found,
        "loops": args.loops,
    }))


if __name__ == "__main__":
    main()
