"""Screenshots of every page of the web UI at the three sizes, into docs/screens/.

Run through ``scripts/screens`` (it makes the network namespace). Each PNG is reduced to a
256-colour palette so it stays well under 200 KB. ``--only live,replay`` limits the pages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ui_support import (  # noqa: E402
    PAGES,
    SIZES,
    browser,
    paired_context,
    start_ui_daemon,
    wait_js,
)

OUT = REPO / "docs" / "screens"
LIMIT = 200_000


def shrink(png: bytes) -> bytes:
    """The PNG as a 256-colour palette PNG (Pillow), or unchanged without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return png
    im = Image.open(io.BytesIO(png)).convert("RGB")
    q = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    q.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


async def ready(page, name: str) -> None:
    if name in ("live", "delayed"):
        with contextlib.suppress(AssertionError):  # else show what there is
            await wait_js(page, "() => window.climbd && window.climbd.state.stats.framesShown > 5"
                          " && window.climbd.state.stats.exactDraws > 2", timeout=25)
    elif name == "replay":
        await wait_js(page, "() => window.replay && window.replay.player"
                      " && window.replay.player.shown", timeout=30)
        await page.evaluate("() => window.replay.player.seekFrame(120)")
        await wait_js(page, "() => window.replay.player.shown.index === 120"
                      " && window.replay.player.overlay.last", timeout=20)
    elif name == "sessions":
        await wait_js(page, "() => [...document.querySelectorAll('#list img')]"
                      ".every(i => i.complete)", timeout=20)
    await page.wait_for_timeout(400)


async def main(only: set[str] | None) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = start_ui_daemon(Path(tmp), pose=True)
        try:
            async with browser() as b:
                storage = None
                for size in SIZES:
                    ctx = await paired_context(b, d, size, storage=storage)
                    storage = await ctx.storage_state()
                    for name, path in PAGES.items():
                        if only and name not in only:
                            continue
                        page = await ctx.new_page()
                        await page.goto(d.base + path)
                        await ready(page, name)
                        data = shrink(await page.screenshot())
                        target = OUT / f"{name}-{size}.png"
                        target.write_bytes(data)
                        flag = "" if len(data) < LIMIT else "  TOO BIG"
                        print(f"{target.relative_to(REPO)}  {len(data) // 1024} KB{flag}")
                        await page.close()
                    await ctx.close()
        finally:
            d.stop()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="comma-separated page names: " + ",".join(PAGES))
    args = ap.parse_args()
    sys.exit(asyncio.run(main(set(args.only.split(",")) if args.only else None)))
