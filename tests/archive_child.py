"""Run the archive uploader alone on a state directory until every session is archived, then
print ``{"rss_before_kb", "peak_rss_kb", "archived"}`` (VmRSS before the upload, VmHWM after;
Linux /proc/self/status). Used by tests/test_archive.py and bench/bench_archive.py.

Usage: python -m tests.archive_child STATE_DIR '<archive section JSON>'
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def main(state_dir: Path, section: dict) -> dict:
    from climbd.archive import Archiver
    from climbd.config import ArchiveConfig
    from climbd.statedir import StateDir
    from climbd.storage import Database

    db = await Database.open(StateDir(state_dir).db)
    archiver = Archiver(ArchiveConfig.model_validate(section), db, state_dir, "box")
    before = _status_kb("VmRSS")
    task = asyncio.create_task(archiver.run())
    try:
        while True:
            counts = await archiver.outbox.counts()
            if counts["unarchived"] == 0 and counts["pending"] == 0:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await archiver.close()
        await db.close()
    return {"rss_before_kb": before, "peak_rss_kb": _status_kb("VmHWM"),
            "archived": counts["archived"], "priority": archiver.priority}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), json.loads(sys.argv[2])))))
