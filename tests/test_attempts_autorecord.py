"""Hands-free recording: ``climbd run`` (a real subprocess with live BlazePose) looping the
steep-wall clip with ``[attempts] auto_record`` makes one session per loop, each holding the
whole attempt with its pre-roll; an empty wall makes none.

The state database is read with sqlite3 (WAL: readers never block the daemon).
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.attempts_support import empty_wall_clip
from tests.conftest import STEEPWALL

pytestmark = pytest.mark.media

CLIP_S = 377 / 25  # the steep-wall clip: 15.08 s, one attempt 0.0 → ~13.4 s


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "climbd.toml"
    cfg.write_text(
        "[attempts]\nauto_record = true\npre_s = 1.0\npost_s = 1.0\ncooldown_s = 0.5\n"
        "[recording]\npre_roll_s = 6.0\n")
    return cfg


def _sessions(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute(
            "SELECT s.id, s.name, s.description, s.status, s.pre_roll_s, s.duration_s, "
            "s.created_at, a.session_id IS NOT NULL AS analysed FROM sessions s "
            "LEFT JOIN attempt_analyses a ON a.session_id = s.id ORDER BY s.id")]
        for r in rows:
            r["attempts"] = [dict(x) for x in con.execute(
                "SELECT start_s, end_s FROM attempts WHERE session_id = ? ORDER BY idx",
                (r["id"],))]
        return rows
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()


def test_auto_record_makes_one_session_per_loop_with_its_pre_roll(
        tmp_path: Path, media: Path, daemon_factory: Any) -> None:
    state = tmp_path / "state"
    d = daemon_factory(STEEPWALL, "--config", str(_config(tmp_path)), state_dir=state)
    d.wait_ready(timeout=90)
    deadline = time.monotonic() + 4 * CLIP_S + 60
    done: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        done = [s for s in _sessions(state / "climbd.db")
                if s["status"] == "completed" and s["analysed"]]
        if len(done) >= 3:
            break
        time.sleep(0.5)
    all_sessions = _sessions(state / "climbd.db")
    assert d.stop() == 0
    assert len(done) >= 3, (all_sessions, d.log())
    # one per loop: consecutive sessions start about one loop apart, never two per loop
    starts = [s["created_at"] for s in all_sessions]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # (the first loop's session starts late: the daemon and the model were still warming up)
    assert gaps[0] > 5 and all(CLIP_S - 2 < g < CLIP_S + 2 for g in gaps[1:]), gaps
    for i, s in enumerate(done[:3]):
        assert re.fullmatch(r"Attempt \d\d:\d\d", s["name"]), s
        assert s["description"] == "recorded hands-free"
        (a,) = s["attempts"]
        assert a["end_s"] is not None, s             # the landing is inside ...
        assert a["end_s"] < s["duration_s"], s       # ... with post-roll after it
        if i == 0:  # the daemon started during the first loop: no pre-roll to reach for
            continue
        # later loops: the whole attempt (~13.4 s from the sit start) and the pre-roll
        assert 12.5 < a["end_s"] - a["start_s"] < 14.5, s
        assert s["pre_roll_s"] >= 1.0, s
        assert a["start_s"] >= 0.9, s


def test_no_session_while_nobody_climbs(tmp_path: Path, media: Path,
                                        daemon_factory: Any) -> None:
    clip = empty_wall_clip(tmp_path / "empty_wall.mp4", seconds=4.0)
    state = tmp_path / "state"
    d = daemon_factory(clip, "--config", str(_config(tmp_path)), state_dir=state)
    d.wait_ready(timeout=90, capture=False)
    deadline = time.monotonic() + 60
    frames = 0
    while time.monotonic() < deadline:  # 12 s of the empty wall through pose
        status, health = d.get("/api/health", timeout=5)
        frames = health.get("attempts", {}).get("frames", 0) if status == 200 else 0
        if frames >= 300:
            break
        time.sleep(0.5)
    assert d.stop() == 0
    assert frames >= 300, d.log()
    assert _sessions(state / "climbd.db") == []
