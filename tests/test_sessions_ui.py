"""The sessions page in headless Chromium against a real ``climbd run``: a list of 64
sessions loaded page by page as it scrolls, newest first, with thumbnails; the detail dialog
edits a session; delete asks first, then removes the session and its files."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import http
from tests.replay_support import NAMES, Env, chromium, start_daemon, wait_js

pytestmark = pytest.mark.browser

EXTRA = 60  # sessions added without video, on top of the template's 4
PAGE = 24


async def _add_sessions(state: Path, n: int) -> None:
    from climbd.storage import Database

    async with await Database.open(state / "climbd.db") as db:
        for i in range(n):
            rec = await db.create_session(name=f"attempt {i:02d}", climber=f"climber {i % 3}",
                                          width=640, height=480, fps=30.0)
            await db.finish_session(rec.id, status="completed", frame_count=30 * (i + 1),
                                    duration_s=float(i + 1))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Env]:
    e = start_daemon(tmp_path_factory.mktemp("sessions-ui"),
                     prepare=lambda state: asyncio.run(_add_sessions(state, EXTRA)))
    yield e
    e.daemon.stop()


async def _open(page: Any, base: str, hash_: str = "") -> None:
    await page.goto(f"{base}/ui/sessions.html{hash_}")
    await wait_js(page, "() => window.sessionsPage && window.sessionsPage.state.total !== null")
    box = await page.locator("#page").bounding_box()  # the scrolling part (not the nav rail)
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


async def _card(page: Any, sid: int) -> Any:
    """The card of session ``sid``, scrolling down until its page is loaded."""
    sel = f'#list li[data-id="{sid}"] button'
    for _ in range(40):
        if await page.locator(sel).count():
            break
        await page.mouse.wheel(0, 4000)
        await asyncio.sleep(0.15)
    card = page.locator(sel)
    await card.scroll_into_view_if_needed()
    return card


async def _ids(page: Any) -> list[int]:
    return [int(x) for x in await page.eval_on_selector_all(
        "#list li", "els => els.map(e => e.dataset.id)")]


async def test_list_pages_newest_first_with_thumbnails(env: Env) -> None:
    status, api = http("GET", f"{env.base}/api/sessions?limit=200")
    assert status == 200 and api["total"] == EXTRA + 4
    expected = [s["id"] for s in api["items"]]
    async with chromium(viewport={"width": 1280, "height": 800}) as (_, page, errors):
        lists: list[str] = []
        page.on("request", lambda r: lists.append(r.url) if "/api/sessions?" in r.url else None)
        await _open(page, env.base)
        first = await _ids(page)
        assert first == expected[:len(first)] and PAGE <= len(first) < len(expected)
        count = await page.text_content("#count") or ""
        assert re.fullmatch(rf"{len(first)} of {EXTRA + 4}", count), count
        # scrolling loads the next pages until every session is there, once, in order
        for _ in range(40):
            await page.mouse.wheel(0, 4000)
            await asyncio.sleep(0.15)
            if len(await _ids(page)) == len(expected):
                break
        assert await _ids(page) == expected
        assert (await page.text_content("#count")) == f"{EXTRA + 4} of {EXTRA + 4}"
        assert not await page.is_visible("#more")
        pages = [u for u in lists if "limit=" in u]
        assert len(pages) == -(-len(expected) // PAGE), pages  # ceil: one request per page
        assert all(f"limit={PAGE}" in u for u in pages)
        # the ingested sessions show a real thumbnail; the others say why they have none
        for sid in (NAMES["short"], NAMES["steepwall"]):
            card = f'#list li[data-id="{sid}"]'
            await page.locator(card).scroll_into_view_if_needed()
            await wait_js(page, """(sel) => { const i = document.querySelector(sel + " img");
                return i && i.complete && i.naturalWidth === 320; }""", arg=card)
        crashed = f'#list li[data-id="{NAMES["crashed"]}"]'
        assert "No video" in (await page.text_content(crashed) or "")
        assert "Interrupted" in (await page.text_content(crashed) or "")
        assert not errors, errors


async def test_edit_in_the_detail_dialog(env: Env) -> None:
    sid = NAMES["short"]
    async with chromium() as (_, page, errors):
        await _open(page, env.base)
        await (await _card(page, sid)).click()
        await page.wait_for_selector("#detail[open]")
        assert await page.get_attribute("#detail-replay", "href") == f"/ui/replay.html?id={sid}"
        assert (await page.get_attribute("#detail-ghost", "href")
                == f"/ui/replay.html?id={sid}&mode=ghost")
        # a blank name is refused on the page, nothing is sent
        await page.fill("#edit-name", "   ")
        await page.click("#detail-save")
        assert "needs a name" in (await page.text_content("#detail-error") or "")
        await page.fill("#edit-name", "Blue V4, try 2")
        await page.fill("#edit-climber", "Robin")
        await page.fill("#edit-description", "heel hook at the lip")
        await page.click("#detail-save")
        await page.wait_for_selector("#detail", state="hidden")
        _, s = http("GET", f"{env.base}/api/sessions/{sid}")
        assert (s["name"], s["climber"], s["description"]) == (
            "Blue V4, try 2", "Robin", "heel hook at the lip")
        card = await page.text_content(f'#list li[data-id="{sid}"]') or ""
        assert "Blue V4, try 2" in card and "Robin" in card
        # a deep link opens the dialog; one to a missing session says so
        await _open(page, env.base, f"#id={sid}")
        await page.wait_for_selector("#detail[open]")
        assert await page.input_value("#edit-name") == "Blue V4, try 2"
        await _open(page, env.base, "#id=99999")
        # (the "Saved" toast may still be up: a hash change does not reload the page)
        toast = await wait_js(page, """() => { const t = document.getElementById('shell-toast');
            return !t.hidden && t.textContent.includes('no longer exists') && t.textContent; }""")
        assert "Session 99999" in toast, toast
        assert not errors, errors


async def test_delete_asks_then_removes_the_session_and_its_files(env: Env) -> None:
    sid = NAMES["steepwall"]
    folder = env.state / "sessions" / str(sid)
    assert (folder / "video.mp4").exists()
    async with chromium() as (_, page, errors):
        await _open(page, env.base)
        total = await page.evaluate("() => window.sessionsPage.state.total")
        await (await _card(page, sid)).click()
        await page.wait_for_selector("#detail[open]")
        await page.click("#detail-delete")
        await page.wait_for_selector("#confirm[open]")
        assert "cannot be undone" in (await page.text_content("#confirm-text") or "")
        await page.click("#confirm-cancel")  # changing one's mind keeps everything
        await page.wait_for_selector("#confirm", state="hidden")
        assert http("GET", f"{env.base}/api/sessions/{sid}")[0] == 200 and folder.exists()
        await page.click("#detail-delete")
        await page.wait_for_selector("#confirm[open]")
        await page.click("#confirm-delete")
        await page.wait_for_selector(f'#list li[data-id="{sid}"]', state="detached")
        assert "Deleted" in (await page.text_content("#shell-toast") or "")
        assert await page.evaluate("() => window.sessionsPage.state.total") == total - 1
        deadline = time.monotonic() + 5
        while folder.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.1)
        assert not folder.exists()
        for path in ("", "/video", "/thumbnail"):
            assert http("GET", f"{env.base}/api/sessions/{sid}{path}")[0] == 404
        assert not errors, errors


async def test_unreachable_api_and_touch_targets(env: Env) -> None:
    async with chromium() as (_, page, errors):
        await _open(page, env.base)
        boxes = await page.eval_on_selector_all(
            "nav a, header button, .toolbar button, .toolbar a, #more, #list button",
            "els => els.filter(e => e.offsetParent).map(e => {"
            " const r = e.getBoundingClientRect();"
            " return [e.id || e.className, r.width, r.height]; })")
        small = [b for b in boxes if b[1] < 64 or b[2] < 64]
        assert boxes and not small, small
        assert await page.get_attribute('nav a[data-page="live"]', "href") == "/"
        # the API failing is said on the page, with a way to retry
        await page.route("**/api/sessions?*", lambda route: route.fulfill(
            status=500, content_type="application/json",
            body='{"error": "internal_error", "message": "database is locked", "details": null}'))
        await page.click("#refresh")
        await page.wait_for_selector("#banner:not([hidden])")
        assert "database is locked" in (await page.text_content("#banner-text") or "")
        await page.unroute("**/api/sessions?*")
        await page.click("#banner-retry")
        await page.wait_for_selector("#banner", state="hidden")
        assert len(await _ids(page)) >= PAGE
        assert not errors, errors
