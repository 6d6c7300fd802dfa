// The frame-exact transport the recorded-video pages share (replay, compare), so both show
// the same controls with the same ids: the timeline row (clock, range of frame indices,
// total) and the five transport buttons (−1 s, ◀ frame, Play, frame ▶, +1 s), plus speed
// choices. The page's HTML marks where they go; its module calls mountTransport() before it
// wires them (the controls' section stays hidden until the video is loaded, so building
// them here moves nothing on the screen):
//
//   <div data-transport="Timeline (frames)" data-keys></div>     -> timeline row + buttons
//   <div class="speeds" role="group" aria-label="Speed" data-speeds="0.1,0.25,0.5,1,2"
//        data-speed-attr="speed" data-speed-default="1"></div>  -> <button data-speed=..>
//
// `data-keys` adds the keyboard shortcuts as tooltips (the replay page has them).

const SPEED_LABELS = { 0.1: "0.1×", 0.25: "¼×", 0.5: "½×", 1: "1×", 2: "2×" };

/** The label of a playback rate: 0.25 -> "¼×". */
export function speedLabel(rate) {
  return SPEED_LABELS[rate] || `${rate}×`;
}

function button(id, label, html, { cls = "", title = "" } = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.id = id;
  b.setAttribute("aria-label", label);
  if (cls) b.className = cls;
  if (title) b.title = title;
  b.innerHTML = html;
  return b;
}

function transport(slot) {
  const keys = slot.hasAttribute("data-keys");
  const row = document.createElement("div");
  row.className = "timeline-row";
  row.innerHTML = '<output id="clock" class="clock">0:00.00</output>'
    + '<input id="timeline" class="timeline" type="range" min="0" max="0" step="1" value="0">'
    + '<output id="total" class="clock muted">0:00.00</output>';
  row.querySelector("#timeline").setAttribute("aria-label", slot.dataset.transport || "Timeline (frames)");
  const buttons = document.createElement("div");
  buttons.className = "buttons transport";
  const k = (t) => (keys ? t : "");
  buttons.append(
    button("back-1s", "Back one second", "−1 s", { title: k("J / Shift+←") }),
    button("step-back", "Previous frame", '◀<span class="word"> frame</span>', { title: k("←") }),
    button("play", "Play", "Play", { cls: "primary", title: k("Space") }),
    button("step-fwd", "Next frame", '<span class="word">frame </span>▶', { title: k("→") }),
    button("fwd-1s", "Forward one second", "+1 s", { title: k("L / Shift+→") }),
  );
  slot.replaceWith(row, buttons);
}

function speeds(group) {
  const attr = group.dataset.speedAttr || "speed";
  const chosen = group.dataset.speedDefault || "1";
  for (const v of group.dataset.speeds.split(",")) {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute(`data-${attr}`, v);
    if (v === chosen) b.setAttribute("aria-pressed", "true");
    b.textContent = speedLabel(Number(v));
    group.appendChild(b);
  }
  group.removeAttribute("data-speeds");
}

/** Build the transport controls and speed choices marked in `root` (see the top). */
export function mountTransport(root = document) {
  for (const slot of root.querySelectorAll("[data-transport]")) transport(slot);
  for (const group of root.querySelectorAll("[data-speeds]")) speeds(group);
}
