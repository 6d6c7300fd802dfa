"""The control panels of the replay page (replay and ghost over live) and the compare page are
tidy at 1280x800, 800x1280 and 390x844, in headless Chromium against a real ``climbd run``
(a looping clip as the camera) inside a private network namespace (loopback only):

- every group of buttons (transport, speed, toggles, actions, layout modes) fills its rows
  edge to edge with buttons of one height: no ragged row, no orphan taking part of a row;
- no button's name is cut off, no panel overflows sideways, every target is big enough;
- the picture keeps most of the screen (the whole height beside a landscape panel that needs
  no scrolling);
- the ghost's four toggles (At lift-off among them) keep all of that;
- on compare the metrics table is on screen without scrolling at 1280x800 and 800x1280.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import ui_support as ui

pytestmark = [pytest.mark.browser]

test_layout_suite_in_a_private_network_namespace = ui.netns_suite(
    __file__, timeout=850, inner_timeout=600)
daemon = ui.ui_daemon_fixture("layout", pose=False)
chromium = ui.browser_fixture()


#: What is untidy in the control panel ``panel`` (a CSS selector) as shown: per group, rows
#: (buttons clustered by their top) that do not reach both edges of the group or whose buttons
#: differ in height; buttons whose name is cut; the panel wider than its box; and the sizes of
#: the panel and the picture (``stage``) for the caller's checks. Sizes in CSS px.
PANEL = """([panel, stage]) => {
  const p = document.querySelector(panel);
  const shown = (e) => { const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; };
  const ragged = [], cut = [];
  for (const g of p.querySelectorAll('.group, .buttons.transport')) {
    if (!shown(g)) continue;
    const gr = g.getBoundingClientRect();
    const items = [...g.children].filter(shown).map((e) => [e, e.getBoundingClientRect()]);
    const rows = new Map();
    for (const [e, r] of items) {
      const key = [...rows.keys()].find((t) => Math.abs(t - r.top) < 2) ?? r.top;
      rows.set(key, [...(rows.get(key) || []), [e, r]]);
    }
    for (const row of rows.values()) {
      const left = Math.min(...row.map(([, r]) => r.left));
      const right = Math.max(...row.map(([, r]) => r.right));
      const hs = row.map(([, r]) => Math.round(r.height));
      if (left - gr.left > 1.5 || gr.right - right > 1.5 || Math.max(...hs) - Math.min(...hs) > 1)
        ragged.push([g.className, row.map(([e]) => e.id || e.textContent.trim()),
                     Math.round(left - gr.left), Math.round(gr.right - right), hs]);
    }
  }
  for (const b of p.querySelectorAll('button, a.button')) {
    if (!shown(b)) continue;
    if (b.scrollWidth > b.clientWidth + 1 || b.scrollHeight > b.clientHeight + 1)
      cut.push([b.id || b.textContent.trim(), b.scrollWidth, b.clientWidth,
                b.scrollHeight, b.clientHeight]);
  }
  const s = document.querySelector(stage).getBoundingClientRect();
  return { ragged, cut, sideways: p.scrollWidth > p.clientWidth + 1,
           scrolls: p.scrollHeight > p.clientHeight + 1,
           stageHeight: s.height, innerHeight: innerHeight };
}"""


async def _tidy(page: Any, panel: str, stage: str, size: str, what: str) -> dict[str, Any]:
    """Assert the panel's rules (see the top) for one page state; returns the PANEL facts."""
    got = await page.evaluate(PANEL, [panel, stage])
    assert not got["ragged"], (what, size, got["ragged"])
    assert not got["cut"], (what, size, got["cut"])
    assert not got["sideways"], (what, size)
    shell = await ui.layout_problems(page)
    assert shell["scrollWidth"] <= shell["innerWidth"], (what, size, shell)
    assert not shell["small"], (what, size, shell["small"])
    share = got["stageHeight"] / got["innerHeight"]
    if size == "landscape":  # a column beside the picture: all of it without scrolling
        assert not got["scrolls"], (what, size, got)
        assert share > 0.9, (what, size, got)
    elif what.startswith("replay"):
        assert share > (0.55 if size == "portrait" else 0.38), (what, size, got)
    return got


@ui.inner
@pytest.mark.parametrize("size", list(ui.SIZES))
async def test_inner_replay_and_ghost_panels_are_tidy(daemon: ui.UiDaemon, chromium: Any,
                                                      size: str) -> None:
    ctx = await ui.paired_context(chromium, daemon, size, name=f"layout {size}")
    page = await ctx.new_page()
    errors = ui.collect_errors(page)
    await page.goto(daemon.base + "/ui/replay.html?id=2")
    await ui.wait_js(page, "() => window.replay.player && window.replay.player.shown", 30)
    await ui.settled(page)  # late layout (fonts, the health banner)
    # the previous-attempt link is part of the actions row when the session has attempts
    await _tidy(page, "#replay-controls", "#stage", size, "replay")
    assert await page.locator("#compare-prev").is_visible()
    await page.locator("#mode-ghost").dispatch_event("click")
    await ui.wait_js(page, "() => !document.getElementById('ghost-controls').hidden", 20)
    await ui.settled(page)
    # four toggles: Loop, With next recording, At lift-off, Live skeleton
    toggles = page.locator("#ghost-controls .toggles > button")
    assert await toggles.count() == 4 and await page.locator("#ghost-liftoff").is_visible()
    await _tidy(page, "#ghost-controls", "#stage", size, "replay ghost")
    assert not errors, errors
    await ctx.close()


@ui.inner
@pytest.mark.parametrize("size", list(ui.SIZES))
async def test_inner_compare_panel_is_tidy_with_the_metrics_on_screen(
        daemon: ui.UiDaemon, chromium: Any, size: str) -> None:
    ctx = await ui.paired_context(chromium, daemon, size, name=f"compare {size}")
    page = await ctx.new_page()
    errors = ui.collect_errors(page)
    await page.goto(daemon.base + "/ui/compare.html?a=1&b=2")
    await ui.wait_js(page, "() => window.compare && window.compare.ready", 30)
    await ui.settled(page)
    for mode in ("side", "over"):
        # a click event, not a tap: a tapped button stays :active (scaled) in headless Chromium
        await page.locator(f"#mode-{mode}").dispatch_event("click")
        await ui.wait_js(page, f"() => document.getElementById('page').dataset.mode === '{mode}'")
        await _tidy(page, "#controls", "#stages", size, f"compare {mode}")
        metrics = await page.evaluate("""() => {
            const m = document.getElementById('metrics').getBoundingClientRect();
            const c = document.getElementById('controls').getBoundingClientRect();
            const s = document.getElementById('stages').getBoundingClientRect();
            return { top: m.top, bottom: m.bottom, height: m.height, panelBottom: c.bottom,
                     rows: document.querySelectorAll('#metrics dt').length,
                     stageW: s.width, stageH: s.height, w: innerWidth, h: innerHeight }; }""")
        assert metrics["rows"] == 7 and metrics["height"] > 40, metrics  # head + 6 metrics
        if size != "phone":  # the whole table on screen, no scrolling
            assert metrics["bottom"] <= min(metrics["panelBottom"], metrics["h"]) + 1, metrics
        # the pictures stay large: most of the width beside the panel / of the height above it
        if size == "landscape":
            assert metrics["stageW"] >= 0.6 * metrics["w"], metrics
        elif size == "portrait":
            assert metrics["stageH"] >= 0.5 * metrics["h"], metrics
    assert not errors, errors
    await ctx.close()
