"""Replay benchmark: seek latency on a long session, session list with 1,000 sessions, pose
bytes per minute of replay. Prints one JSON object.

Setup (in a temporary directory, nothing in the repository):

- ``climb_steepwall_static.mp4`` (25 fps, 15.08 s) is ingested once (real BlazePose rows).
- Two 30-minute sessions are built from it without running pose on 30 minutes of frames:
  the video is the clip looped by stream copy (``ffmpeg -stream_loop``) and remuxed like a
  recording (``+faststart``); the pose rows are the ingested clip's rows repeated with
  shifted times and frame indices, committed one ~1 s chunk at a time as the recorder does.

  - ``ingested``: the clip's own encoding (x264 High, keyframe every 250 frames = 10 s);
  - ``ingested_reencoded``: the clip as ``climbd ingest`` now stores a long-GOP file
    (:mod:`climbd.storage.reencode`: libx264 CRF 20, keyframe every 1 s, no B-frames);
  - ``recorded``: the clip re-encoded once as the appliance records (constrained baseline,
    keyframe every 1 s, no B-frames) — what a live recording looks like.

- 1,000 more sessions are created directly through :class:`climbd.storage.Database`.

Measured against ``climbd run`` (no camera, pose off) on 127.0.0.1 and headless Chromium:

- ``seek``: time from a seek on the replay page to the first frame shown *with its own
  skeleton drawn* (``requestVideoFrameCallback`` of the target frame + its pose window), for
  random seeks anywhere in 30 minutes (``far``) and ±1 s jumps (``near``); p50/p95/max ms;
  ``far_video_only``: the same far seeks until the video frame alone was shown.
  Target: p95 ≤ 250 ms.
- ``session_list``: ``GET /api/sessions`` with 1,003 sessions (first page and a deep page),
  round trip on loopback (an upper bound of server time), and the sessions page's time to
  its first cards. Target: ≤ 200 ms server time.
- ``pose_bytes_per_minute``: bytes of pose data the replay page fetched while playing one
  minute of the session (binary windows), next to what the JSON format would have cost and
  the video's own bytes per minute.

Run: ``uv run python bench/bench_replay.py [--minutes 30] [--seeks 40] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from procs import stop_process

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO.parent / "shared" / "media" / "climb_steepwall_static.mp4"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]
sys.path.insert(0, str(REPO))


def _pct(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    v = sorted(values)
    return {"n": len(v), "p50": round(statistics.median(v), 1),
            "p95": round(v[min(len(v) - 1, int(0.95 * len(v)))], 1), "max": round(v[-1], 1)}


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{r.stderr[-3000:]}")


def _looped(src: Path, out: Path, loops: int) -> None:
    _run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(src),
          "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", str(out)])


def _appliance_encoding(src: Path, out: Path) -> None:
    """The clip as climbd's encoder makes it (climbd/video.py): constrained baseline,
    GOP 1 s, no B-frames, zero-latency tuning."""
    _run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-c:v", "libx264",
          "-profile:v", "baseline", "-tune", "zerolatency", "-preset", "veryfast", "-g", "25",
          "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0", "-b:v", "2500k",
          "-pix_fmt", "yuv420p", str(out)])


async def _build(state: Path, videos: dict[str, Path], n_extra: int) -> dict[str, Any]:
    from climbd.statedir import StateDir
    from climbd.storage import Database, finalize
    from climbd.visibility import SYSTEM, viewing

    out: dict[str, Any] = {}
    async with await Database.open(StateDir(state).db) as db:
        with viewing(SYSTEM):  # the benchmark acts for the appliance (climbd.visibility)
            src_rec = await db.get_session(1)
            src = await db.poses(1)
        clip_frames, clip_s = src_rec.frame_count, src_rec.duration_s
        for name, video in videos.items():
            rec = await db.create_session(name=f"30 min {name}", width=src_rec.width,
                                          height=src_rec.height, fps=src_rec.fps)
            video_file = StateDir(state).video(rec.id)
            video_file.parent.mkdir(parents=True)
            t0 = time.perf_counter()
            info = await asyncio.to_thread(finalize, video, video_file)
            remux_s = time.perf_counter() - t0
            loops = round(info.frames / clip_frames)
            t0 = time.perf_counter()
            rows = 0
            for k in range(loops):
                frames = src.frames + k * clip_frames
                times = src.times + k * clip_s
                for second in range(int(np.ceil(clip_s))):  # one chunk per second
                    sel = (src.times >= second) & (src.times < second + 1)
                    if not sel.any():
                        continue
                    await db.append_poses(rec.id, frames[sel], times[sel], src.image[sel],
                                          src.world[sel], frame_count=int(frames[sel][-1]) + 1,
                                          duration_s=float(times[sel][-1]))
                    rows += int(sel.sum())
            append_s = time.perf_counter() - t0
            await db.finish_session(rec.id, status="completed", frame_count=info.frames,
                                    duration_s=info.duration_s,
                                    video_path=f"sessions/{rec.id}/video.mp4")
            out[name] = {"id": rec.id, "frames": info.frames, "duration_s": info.duration_s,
                         "video_bytes": info.bytes, "pose_rows": rows,
                         "remux_s": round(remux_s, 2), "pose_append_s": round(append_s, 2)}
        t0 = time.perf_counter()
        for i in range(n_extra):
            rec = await db.create_session(name=f"attempt {i}", climber=f"climber {i % 7}",
                                          width=540, height=720, fps=25.0)
            await db.finish_session(rec.id, status="completed", frame_count=250,
                                    duration_s=10.0)
        out["extra_sessions"] = {"n": n_extra, "create_s": round(time.perf_counter() - t0, 2)}
    return out


def _minute_start(duration_s: float) -> int:
    """Where the measured minute of replay starts: 2 min in when the session is long."""
    return 120 if duration_s >= 190 else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the Authorization header of an admin token from the daemon's admin socket (set in main)
AUTH: dict[str, str] = {}


def _get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, body


async def _wait_js(page: Any, fn: str, timeout: float = 60, arg: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await page.evaluate(fn, arg)
        if v:
            return v
        await asyncio.sleep(0.02)
    raise TimeoutError(fn)


async def _seeks(page: Any, base: str, sid: int, n: int, rng: random.Random
                 ) -> dict[str, Any]:
    await page.goto(f"{base}/ui/replay.html?id={sid}")
    await _wait_js(page, "() => window.replay && window.replay.player"
                         " && window.replay.player.stats.lastSeek")
    total = await page.evaluate("() => window.replay.player.n")
    fps = await page.evaluate("() => window.replay.player.fps")
    out: dict[str, list[float]] = {"far": [], "near": [], "far_video_only": []}
    for i in range(2 * n):
        kind = "far" if i % 2 == 0 else "near"
        if kind == "far":
            target = rng.randrange(total)
        else:
            here = await page.evaluate("() => window.replay.player.index")
            target = min(total - 1, max(0, here + rng.choice((-1, 1)) * round(fps)))
        ms = await page.evaluate("""async (i) => {
            const p = window.replay.player;
            p.seekFrame(i);
            const t0 = performance.now();
            while (!(p.stats.lastSeek && p.stats.lastSeek.index === i
                     && p.overlay.last && p.overlay.last.frameTs === i)) {
              if (performance.now() - t0 > 20000) return -1;
              await new Promise((r) => setTimeout(r, 2));
            }
            return [p.stats.lastSeek.ms, p.stats.lastSeek.videoMs];
        }""", target)
        if ms == -1:
            raise SystemExit(f"seek to frame {target} never showed")
        out[kind].append(ms[0])
        if kind == "far" and ms[1] is not None:
            out["far_video_only"].append(ms[1])
    return {k: _pct(v) for k, v in out.items()}


async def _minute_of_replay(page: Any, base: str, sid: int, start: int) -> dict[str, Any]:
    await page.goto(f"{base}/ui/replay.html?id={sid}&t={start}")
    await _wait_js(page, "() => window.replay && window.replay.player"
                         " && window.replay.player.stats.lastSeek")
    before = await page.evaluate("() => ({...window.replay.player.poses.stats})")
    await page.evaluate("() => { window.replay.player.setRate(2); window.replay.player.play(); }")
    await _wait_js(page, "(end) => window.replay.player.times[window.replay.player.index] >= end",
                   timeout=90, arg=start + 60)
    await page.evaluate("() => window.replay.player.pause()")
    after = await page.evaluate("() => ({...window.replay.player.poses.stats})")
    drawn = await page.evaluate("() => window.replay.player.stats")
    return {"bytes": after["bytes"] - before["bytes"],
            "requests": after["requests"] - before["requests"],
            "rows": after["rows"] - before["rows"],
            "decode_ms": round(after["decodeMs"] - before["decodeMs"], 1),
            "frames_drawn_with_skeleton": drawn["drawn"], "frames_without": drawn["noPose"]}


async def _list_page(page: Any, base: str) -> float:
    samples = []
    for _ in range(5):
        await page.goto(f"{base}/ui/sessions.html")
        ms = await _wait_js(page, """() => document.querySelectorAll('#list li').length >= 24
            && performance.now()""")
        samples.append(float(ms))
    return round(statistics.median(samples), 1)


async def _browser(base: str, sessions: dict[str, Any], seeks: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    rng = random.Random(4)
    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 800},
                                      extra_http_headers=AUTH)
        for name in ("recorded", "ingested", "ingested_reencoded"):
            out[f"seek_ms_{name}"] = await _seeks(page, base, sessions[name]["id"], seeks, rng)
        rec = sessions["recorded"]
        out["minute_of_replay"] = await _minute_of_replay(page, base, rec["id"],
                                                          _minute_start(rec["duration_s"]))
        out["sessions_page_first_cards_ms"] = await _list_page(page, base)
        await browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the long sessions")
    ap.add_argument("--seeks", type=int, default=40, help="random seeks (and as many ±1 s)")
    ap.add_argument("--sessions", type=int, default=1000, help="extra sessions in the list")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if not CLIP.exists():
        raise SystemExit(f"test media not found: {CLIP}")
    result: dict[str, Any] = {"clip": CLIP.name, "minutes": args.minutes}
    with tempfile.TemporaryDirectory(prefix="climbd-bench-replay-") as tmp_s:
        tmp = Path(tmp_s)
        state = tmp / "state"
        t0 = time.perf_counter()
        _run([sys.executable, "-m", "climbd", "ingest", str(CLIP), "--state-dir", str(state),
              "--json"])
        result["ingest_clip_s"] = round(time.perf_counter() - t0, 1)
        loops = max(1, round(args.minutes * 60 / 15.08))
        gop1 = tmp / "gop1s.mp4"
        _appliance_encoding(CLIP, gop1)
        videos = {"recorded": tmp / "recorded.mp4", "ingested": tmp / "ingested.mp4",
                  "ingested_reencoded": tmp / "ingested_reencoded.mp4"}
        _looped(gop1, videos["recorded"], loops)
        _looped(CLIP, videos["ingested"], loops)
        # what `climbd ingest` stores now for a long-GOP file (climbd.storage.reencode)
        from climbd.storage.reencode import prepare_replay_video

        reencoded = tmp / "reencoded.mp4"
        prepare_replay_video(CLIP, reencoded)
        _looped(reencoded, videos["ingested_reencoded"], loops)
        sessions = asyncio.run(_build(state, videos, args.sessions))
        result["sessions"] = sessions
        port = _free_port()
        cfg = tmp / "climbd.toml"
        cfg.write_text("[pose]\nenabled = false\n")
        log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(
            [sys.executable, "-m", "climbd", "run", "--config", str(cfg), "--source",
             "/dev/video9", "--state-dir", str(state), "--host", "127.0.0.1", "--port",
             str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "GLOG_minloglevel": "2"})
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    _get(base + "/api/health")
                    break
                except OSError:
                    time.sleep(0.2)
            from bench.bench_live import _admin_token

            AUTH["Authorization"] = f"Bearer {_admin_token(state, 120)}"
            total = json.loads(_get(base + "/api/sessions?limit=1")[1])["total"]
            first = [_get(base + "/api/sessions?limit=24")[0] for _ in range(50)]
            deep = [_get(base + f"/api/sessions?limit=24&offset={total - 24}")[0]
                    for _ in range(50)]
            result["session_list"] = {"sessions": total, "first_page_ms": _pct(first),
                                      "last_page_ms": _pct(deep)}
            rec = sessions["recorded"]
            ms, frames = _get(base + f"/api/sessions/{rec['id']}/frames?format=bin")
            cached_ms, _ = _get(base + f"/api/sessions/{rec['id']}/frames?format=bin")
            thumb_ms, thumb = _get(base + f"/api/sessions/{rec['id']}/thumbnail")
            thumb_cached_ms, _ = _get(base + f"/api/sessions/{rec['id']}/thumbnail")
            result["frame_table"] = {"bytes": len(frames), "first_ms": round(ms, 1),
                                     "cached_ms": round(cached_ms, 1)}
            result["thumbnail"] = {"bytes": len(thumb), "first_ms": round(thumb_ms, 1),
                                   "cached_ms": round(thumb_cached_ms, 1)}
            json_bytes = bin_bytes = 0
            first_s = _minute_start(rec["duration_s"])
            for start in range(first_s, first_s + 60, 10):
                q = f"/api/sessions/{rec['id']}/poses?start={start}&end={start + 10}"
                json_bytes += len(_get(base + q)[1])
                bin_bytes += len(_get(base + q + "&format=bin")[1])
            result.update(asyncio.run(_browser(base, sessions, args.seeks)))
            minute = result["minute_of_replay"]
            result["pose_bytes_per_minute"] = {
                "fetched_by_page": minute["bytes"],
                "binary_windows": bin_bytes, "json_windows": json_bytes,
                "video": round(rec["video_bytes"] / rec["duration_s"] * 60),
            }
        finally:
            stop_process(daemon, log)
        shutil.rmtree(state, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
