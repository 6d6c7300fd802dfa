"""Screenshots of every page of the web UI at the three sizes, into docs/screens/.

Run through ``scripts/screens`` (it makes the network namespace). Each PNG is reduced to a
256-colour palette so it stays well under 200 KB. ``--only live,replay`` limits the pages;
``--out DIR --full-page`` writes whole-page shots (below the fold too) elsewhere, for a
review, leaving docs/screens/ as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

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
ADMIN_PIN = "24681357"
#: Pages shown as the admin sees them (the operator view); the others as a wall tablet.
AS_ADMIN = {"settings"}
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
                          " && window.climbd.state.stats.exactDraws > 2"
                          " && !document.getElementById('record').disabled", timeout=25)
    elif name == "replay":
        await wait_js(page, "() => window.replay && window.replay.player"
                      " && window.replay.player.shown", timeout=30)
        await page.evaluate("() => window.replay.player.seekFrame(120)")
        await wait_js(page, "() => window.replay.player.shown.index === 120"
                      " && window.replay.player.overlay.last", timeout=20)
    elif name == "ghost":
        with contextlib.suppress(AssertionError):  # else show what there is
            await wait_js(page, "() => window.replay && window.replay.ghost"
                          " && window.replay.ghost.stats.liveFrames > 5", timeout=25)
    elif name == "compare":
        await wait_js(page, "() => window.compare && window.compare.ready", timeout=30)
    elif name == "settings":
        with contextlib.suppress(AssertionError):
            await wait_js(page, "() => document.querySelectorAll('#facts > div').length > 3",
                          timeout=10)
    elif name == "sessions":
        await wait_js(page, "() => [...document.querySelectorAll('#list img')]"
                      ".every(i => i.complete)", timeout=20)
    await page.wait_for_timeout(400)


async def fit_page(page) -> None:
    """Make the viewport as tall as the page's scrolled content (same width), so a shot
    shows what is below the fold; the app shell scrolls inside ``#page``, which
    ``full_page`` screenshots alone do not see."""
    size = page.viewport_size
    height = await page.evaluate("""() => { const m = document.getElementById('page');
        return m ? Math.ceil(m.scrollHeight + window.innerHeight - m.clientHeight)
                 : document.documentElement.scrollHeight; }""")
    if height > size["height"]:
        await page.set_viewport_size({"width": size["width"], "height": min(height, 6000)})
        await page.wait_for_timeout(300)


async def unlock_admin(ctx, d) -> None:
    """Set the admin PIN (with an admin code, as the owner does once) and log this context in."""
    page = await ctx.new_page()
    await page.goto(d.base + "/pair")
    for path, body in (("/api/auth/admin/setup", {"code": d.pairing_code(admin=True),
                                                  "password": ADMIN_PIN}),
                       ("/api/auth/admin/login", {"password": ADMIN_PIN})):
        status = await page.evaluate("""async ([path, body]) => (await fetch(path, {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token':
              decodeURIComponent((document.cookie.match(/climbd_csrf=([^;]+)/) || [])[1] || '')},
            body: JSON.stringify(body)})).status""", [path, body])
        assert status in (200, 201), (path, status)
    await page.close()


def main(only: set[str] | None, out: Path = OUT, full_page: bool = False,
         extra_config: str = "") -> int:
    """Start the daemon (building the session template runs its own event loop), then shoot."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = start_ui_daemon(Path(tmp), pose=True, extra_config=extra_config)
        try:
            asyncio.run(shoot(d, only, out, full_page))
        finally:
            d.stop()
    return 0


async def shoot(d: Any, only: set[str] | None, out: Path = OUT, full_page: bool = False) -> None:
    """Every page (or those in ``only``) at every size, written shrunk into ``out``
    (docs/screens/); ``full_page``: the whole scrolled page, not just the viewport."""
    async with browser() as b:
        storage = admin_storage = None
        for size in SIZES:
            ctx = await paired_context(b, d, size, storage=storage)
            storage = await ctx.storage_state()
            admin = await paired_context(b, d, size, storage=admin_storage,
                                         name="Coach tablet")
            if admin_storage is None:
                await unlock_admin(admin, d)
            admin_storage = await admin.storage_state()
            for name, path in PAGES.items():
                if only and name not in only:
                    continue
                page = await (admin if name in AS_ADMIN else ctx).new_page()
                await page.goto(d.base + path)
                await ready(page, name)
                if full_page:  # the shell scrolls inside <main>: grow the window to fit it
                    await fit_page(page)
                data = shrink(await page.screenshot(full_page=full_page))
                target = out / f"{name}-{size}.png"
                target.write_bytes(data)
                flag = "" if len(data) < LIMIT or full_page else "  TOO BIG"
                print(f"{target}  {len(data) // 1024} KB{flag}")
                await page.close()
            await ctx.close()
            await admin.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="comma-separated page names: " + ",".join(PAGES))
    ap.add_argument("--out", type=Path, default=OUT, help="directory (default docs/screens)")
    ap.add_argument("--full-page", action="store_true", help="the whole page, scrolled")
    ap.add_argument("--extra-config", default="", help="TOML appended to the daemon's config "
                    "(e.g. to show the MQTT and archive lines of the settings page)")
    args = ap.parse_args()
    sys.exit(main(set(args.only.split(",")) if args.only else None, args.out.resolve(),
                  args.full_page, args.extra_config))
