"""``climbd export``: export a session from the command line, with a progress bar.

::

    climbd export SESSION_ID --kind overlay [--start S] [--end S] [--speed 0.5]
                  [--out FILE] [--state-dir DIR] [--config FILE] [--json]

The export runs exactly as one started over HTTP (same validation, same low-priority
worker process, same ``exports`` row, visible in ``GET /api/exports``), so it is safe next
to a running daemon: SQLite in WAL mode lets both use the catalog. The file is stored under
``<state dir>/exports/<id>/``; ``--out`` also puts it at FILE (a hard link when possible,
else a copy). Ctrl-C cancels the export and removes its partial file.

Exit codes: 0 done, 1 the export failed or was refused, 2 bad usage or config, 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from climbd.config import ExportConfig

__all__ = ["add_export_parser", "run_export", "terminal_bar"]


def add_export_parser(sub: Any) -> None:
    """Add the ``export`` sub-command to ``climbd``'s parser (``sub``: the parser's
    ``add_subparsers()`` action)."""
    p = sub.add_parser("export", help="export a session: video clip, skeleton burned in, or "
                       "pose CSV/JSON (low priority, progress bar)")
    p.add_argument("session_id", type=int, help="the session to export")
    p.add_argument("--kind", required=True, choices=("video", "overlay", "csv", "json"),
                   help="video: as recorded, no re-encoding (starts at a keyframe); overlay: "
                   "skeleton burned in; csv/json: pose data")
    p.add_argument("--start", type=float, help="seconds from the session start (default 0)")
    p.add_argument("--end", type=float, help="seconds from the session start (default: end)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="overlay only: playback speed 0.1-1 (0.5 = half speed), frames "
                   "re-timed, not duplicated")
    p.add_argument("--out", help="also write the result to this file")
    p.add_argument("--state-dir", help="database and sessions (default: $STATE_DIRECTORY "
                   "or ~/.local/state/climbd)")
    p.add_argument("--config", help="TOML config file ([export] settings)")
    p.add_argument("--json", action="store_true", help="print the export as one JSON object")


def terminal_bar(label: str, stream: TextIO | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that draws a bar on a terminal (no-op otherwise)."""
    out = stream or sys.stderr
    if not out.isatty():
        return lambda done, total: None
    t0 = time.monotonic()

    def show(done: int, total: int) -> None:
        frac = done / total if total else 0.0
        rate = done / max(1e-6, time.monotonic() - t0)
        bar = "#" * int(30 * frac)
        out.write(f"\r{label[:28]:28} [{bar:30}] {100 * frac:5.1f}% {done}/{total or '?'} "
                  f"{rate:6.1f}/s")
        if total and done >= total:
            out.write("\n")
        out.flush()

    return show


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


async def _export(args: argparse.Namespace, config: ExportConfig) -> int:
    from climbd.config import resolve_state_dir
    from climbd.errors import ExportError
    from climbd.export.jobs import ExportManager
    from climbd.statedir import StateDir
    from climbd.storage import Database

    state_dir = resolve_state_dir(args.state_dir)
    paths = StateDir(state_dir)
    if not paths.db.is_file():
        raise ExportError(f"no climbd database in {state_dir} (use --state-dir)")
    db = await Database.open(paths.db)
    manager = ExportManager(db, state_dir, config)
    try:
        await manager.start()
        rec = await manager.submit(args.session_id, args.kind, args.start, args.end,
                                   args.speed)
        manager.listen(rec.id, terminal_bar(f"session {args.session_id} {args.kind}"))
        rec = await manager.wait(rec.id)
        if rec.status != "done":
            print(f"climbd export: export {rec.id} {rec.status}: {rec.error}", file=sys.stderr)
            return 1
        path = state_dir / rec.path
        if args.out:
            _place(path, Path(args.out))
            path = Path(args.out)
        if args.json:
            print(json.dumps({**rec.model_dump(), "file": str(path)}), flush=True)
        else:
            print(f"export {rec.id}: {path} ({rec.bytes} bytes, {rec.frames} frames, "
                  f"{rec.actual_start_s:.3f}-{rec.actual_end_s:.3f} s)", flush=True)
            if rec.note:
                print(f"  {rec.note}", flush=True)
        return 0
    finally:
        await manager.close()
        await db.close()


def run_export(args: argparse.Namespace, config_path: str | None = None) -> int:
    """Run ``climbd export`` (see the module docstring); returns the exit code.

    Raises:
        ConfigError: bad config file. ClimbdError: the export was refused (the caller
            prints it and exits 1).
    """
    from climbd.config import load_config

    config = load_config(config_path if config_path is not None else args.config)
    from climbd.visibility import SYSTEM, viewing

    with viewing(SYSTEM):  # the CLI acts for the appliance (climbd.visibility)
        return asyncio.run(_export(args, config.export))
