// The sessions page (/ui/sessions.html[#id=N]): every session, newest first, loaded a page at
// a time as the list scrolls (GET /api/sessions?limit=&offset=), with a thumbnail
// (GET /api/sessions/{id}/thumbnail, lazily), name, climber, date and duration. A card opens
// the detail dialog: edit name/climber/description (PATCH), replay, ghost over live, delete
// after a confirmation (DELETE removes the video and pose data on the appliance; admin only),
// pin (never deleted automatically) and private (only this screen and the admin see it).
// A session still recording, or whose pose is still being filled in (pose_status "live" /
// "backfilling"), is asked about again every 2 s: its card shows "Analysing pose… N %" over
// the thumbnail (no layout shift) until the pose is complete, and a finished recording's
// card gets its thumbnail.
// Actions the caller's role cannot use are not shown (data-needs, see ./shell.js).

import {
  api, formatDate, formatDuration, poseProgress, statusText, toast, watchPose,
} from "./replay-common.js";
import { initShell } from "./shell.js";

const shell = initShell({ page: "sessions", title: "Sessions" });

const $ = (id) => document.getElementById(id);
export const PAGE_SIZE = 24;

const state = {
  items: new Map(), // id -> session
  offset: 0, // sessions fetched from the server so far (minus deletions)
  total: null,
  loading: false,
  done: false,
  current: null, // session in the detail dialog
  watchers: new Map(), // id -> watchPose() of a session still recording or being analysed
  stats: { pages: 0, failures: 0 },
};

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function updateCount() {
  const shown = state.items.size;
  const count = state.total === null ? ""
    : state.total === 0 ? "none yet" : `${shown} of ${state.total}`;
  $("count").textContent = count;

  $("empty").hidden = state.total !== 0;
  $("more").hidden = state.done || state.total === null;
}

// -- list -----------------------------------------------------------------------------------
async function loadPage() {
  if (state.loading || state.done) return;
  state.loading = true;
  $("more").disabled = true;
  let ok = false;
  try {
    const page = await api(`/api/sessions?limit=${PAGE_SIZE}&offset=${state.offset}`);
    state.stats.pages++;
    hideBanner();
    state.total = page.total;
    state.offset += page.items.length;
    if (state.offset === page.items.length && page.items.length) showReplayLast(page.items);
    for (const s of page.items) {
      if (state.items.has(s.id)) continue; // a new session shifted the pages: skip repeats
      state.items.set(s.id, s);
      $("list").appendChild(card(s));
      watch(s);
    }
    state.done = page.items.length < PAGE_SIZE || state.offset >= page.total;
    ok = true;
  } catch (err) {
    state.stats.failures++;
    showBanner(`The sessions cannot be loaded: ${err.message}`);
  } finally {
    state.loading = false;
    $("more").disabled = false;
    updateCount();
  }
  // a tall screen may show the sentinel already: keep filling it (not after a failure:
  // the banner's Retry button does that)
  if (ok && !state.done && sentinelVisible()) loadPage();
}

function showReplayLast(items) {
  const last = items.find((s) => s.video_url && s.status !== "recording");
  const a = $("replay-last");
  a.hidden = !last;
  if (last) a.href = `/ui/replay.html?id=${last.id}&loop=1`;
}

function sentinelVisible() {
  const r = $("sentinel").getBoundingClientRect();
  return r.top < window.innerHeight + 400;
}

function reload() {
  state.items.clear();
  state.offset = 0;
  state.total = null;
  state.done = false;
  $("list").replaceChildren();
  loadPage();
}

function thumbnail(s, img, holder) {
  const placeholder = document.createElement("span");
  placeholder.className = "placeholder";
  if (!s.video_url) {
    placeholder.textContent = s.status === "recording" ? "Recording…" : "No video";
    holder.appendChild(placeholder);
    return;
  }
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = "";
  img.addEventListener("error", () => {
    img.remove();
    placeholder.textContent = "No picture";
    holder.appendChild(placeholder);
  }, { once: true });
  img.src = `/api/sessions/${s.id}/thumbnail`;
  holder.appendChild(img);
}

function card(s) {
  const li = document.createElement("li");
  li.dataset.id = String(s.id);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.setAttribute("aria-label", `${s.name}, ${formatDuration(s.duration_s)}`);
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  thumbnail(s, document.createElement("img"), thumb);
  const duration = document.createElement("span");
  duration.className = "duration";
  duration.textContent = formatDuration(s.duration_s);
  thumb.appendChild(duration);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.append(
    text("span", "name", s.name),
    text("span", "sub", [s.climber, formatDate(s.created_at)].filter(Boolean).join(" · ")),
  );
  const status = statusText(s);
  if (status) meta.appendChild(text("span", "status", status));
  showPoseBadge(thumb, s);
  button.append(thumb, meta);
  button.addEventListener("click", () => openDetail(s.id));
  li.appendChild(button);
  const strip = attemptStrip(s);
  if (strip) li.appendChild(strip);
  return li;
}

// The session's attempts (found from pose: climber leaves the ground → back on it): a
// thumbnail at lift-off and the duration; a tap replays from the lift-off, "vs previous"
// opens the compare page with the attempt before it.
// The detail dialog: each attempt's headline metrics (climbd/attempts/metrics.py).
function showAttemptMetrics(s) {
  let box = document.getElementById("detail-attempts");
  if (!box) {
    box = document.createElement("ul");
    box.id = "detail-attempts";
    box.className = "detail-attempts";
    box.setAttribute("aria-label", "Attempts");
    $("detail-facts").after(box);
  }
  box.replaceChildren();
  (s.attempts || []).forEach((a, i) => {
    const m = a.metrics || {};
    const parts = [
      m.time_on_wall_s !== null && m.time_on_wall_s !== undefined ? `${formatDuration(m.time_on_wall_s)} on the wall` : "",
      m.height_gained_m !== null && m.height_gained_m !== undefined ? `${m.height_gained_m.toFixed(2)} m up` : "",
      m.hip_path_m !== null && m.hip_path_m !== undefined ? `hip path ${m.hip_path_m.toFixed(1)} m` : "",
      m.economy !== null && m.economy !== undefined ? `economy ${Math.round(m.economy * 100)} %` : "",
      Array.isArray(m.pauses) ? `${m.pauses.length} pause${m.pauses.length === 1 ? "" : "s"}` : "",
    ].filter(Boolean);
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/ui/replay.html?id=${s.id}&t=${a.start_s}`;
    link.textContent = `Attempt ${i + 1}`;
    li.append(link, document.createTextNode(`: ${parts.join(" · ") || "no measurements"}`));
    box.appendChild(li);
  });
  box.hidden = !(s.attempts || []).length;
}

function attemptStrip(s) {
  const attempts = s.attempts || [];
  if (!attempts.length || !s.video_url) return null;
  const ul = document.createElement("div");
  ul.className = "attempts";
  ul.setAttribute("role", "group");
  ul.setAttribute("aria-label", `Attempts in ${s.name}`);
  attempts.forEach((a, i) => {
    const item = document.createElement("div");
    item.className = "attempt-item";
    const link = document.createElement("a");
    link.className = "attempt";
    link.href = `/ui/replay.html?id=${s.id}&t=${a.start_s}`;
    const dur = a.duration_s === null || a.duration_s === undefined
      ? "to the end" : formatDuration(a.duration_s);
    link.setAttribute("aria-label", `Attempt ${i + 1}, ${dur}: replay from lift-off`);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = "";
    img.src = `/api/sessions/${s.id}/attempts/${i}/thumbnail`;
    img.addEventListener("error", () => img.remove(), { once: true });
    link.append(img, text("span", "attempt-label", `#${i + 1} · ${dur}`));
    const vs = document.createElement("a");
    vs.className = "attempt-compare";
    vs.href = `/ui/compare.html?a=${s.id}&at=${i}`;
    vs.textContent = "vs previous";
    item.append(link, vs);
    ul.appendChild(item);
  });
  return ul;
}

function text(tag, cls, content) {
  const el = document.createElement(tag);
  el.className = cls;
  el.textContent = content;
  return el;
}

function replaceCard(s) {
  state.items.set(s.id, s);
  const old = document.querySelector(`#list li[data-id="${s.id}"]`);
  if (old) old.replaceWith(card(s));
}

// -- pose still being filled in ---------------------------------------------------------------
/** The "Analysing pose… N %" badge over a card's thumbnail (removed once complete). */
function showPoseBadge(thumb, s) {
  let badge = thumb.querySelector(".pose-badge");
  const p = poseProgress(s);
  if (!p) {
    if (badge) badge.remove();
    return;
  }
  if (!badge) {
    badge = document.createElement("span");
    badge.className = "pose-badge";
    badge.innerHTML = '<span class="long">Analysing pose… </span><span class="short">Pose </span>'
      + '<span class="pct"></span>';
    thumb.appendChild(badge);
  }
  badge.title = p.text;
  badge.querySelector(".pct").textContent = `${p.pct} %`;
  badge.style.setProperty("--pct", `${p.pct}%`);
}

const stillChanging = (s) => s.status === "recording" || poseProgress(s) !== null;

/** Keep asking about a session still recording or being analysed, updating its card. */
function watch(s) {
  if (!stillChanging(s) || state.watchers.has(s.id)) return;
  state.watchers.set(s.id, watchPose(s.id, (fresh) => {
    const before = state.items.get(fresh.id);
    if (!before) return;
    if (before.status !== fresh.status || before.video_url !== fresh.video_url) {
      replaceCard(fresh); // recording finished: thumbnail, duration, status
    } else {
      state.items.set(fresh.id, fresh);
      const thumb = document.querySelector(`#list li[data-id="${fresh.id}"] .thumb`);
      if (thumb) showPoseBadge(thumb, fresh);
    }
    if (state.current && state.current.id === fresh.id) showFacts(fresh);
    if (!stillChanging(fresh)) unwatch(fresh.id);
  }, { until: (x) => !stillChanging(x), onGone: () => removeCard(s.id) }));
}

function unwatch(id) {
  const w = state.watchers.get(id);
  if (w) w.stop();
  state.watchers.delete(id);
}

function removeCard(id) {
  unwatch(id);
  const old = document.querySelector(`#list li[data-id="${id}"]`);
  if (old) old.remove();
  if (state.items.delete(id)) {
    state.offset = Math.max(0, state.offset - 1); // later pages moved up by one
    if (state.total !== null) state.total = Math.max(0, state.total - 1);
  }
  updateCount();
}

// -- detail ---------------------------------------------------------------------------------
async function openDetail(id) {
  let s;
  try {
    s = await api(`/api/sessions/${id}`);
  } catch (err) {
    if (err.status === 404) {
      removeCard(id);
      toast(`Session ${id} no longer exists.`, "error");
    } else {
      toast(err.message, "error");
    }
    if (window.location.hash) window.history.replaceState(null, "", window.location.pathname);
    return;
  }
  state.current = s;
  $("detail-title").textContent = s.name;
  $("edit-name").value = s.name;
  $("edit-climber").value = s.climber;
  $("edit-description").value = s.description;
  $("detail-error").textContent = "";
  showFacts(s);
  showAttemptMetrics(s);
  const img = $("detail-thumb");
  img.hidden = !s.video_url;
  if (s.video_url) img.src = `/api/sessions/${s.id}/thumbnail`;
  img.onerror = () => { img.hidden = true; };
  const replay = $("detail-replay");
  replay.href = `/ui/replay.html?id=${s.id}`;
  replay.hidden = !s.video_url || s.status === "recording";
  const ghost = $("detail-ghost");
  ghost.href = `/ui/replay.html?id=${s.id}&mode=ghost`;
  ghost.hidden = !(s.frames_with_pose > 0);
  $("detail-delete").disabled = s.status === "recording";
  showPin(s);
  showPrivacy(s);
  window.history.replaceState(null, "", `#id=${s.id}`);
  if (!$("detail").open) $("detail").showModal();
}

function showFacts(s) {
  const pose = poseProgress(s);
  const facts = [formatDate(s.created_at), formatDuration(s.duration_s),
    `${s.frame_count} frames`, `${s.frames_with_pose} with a skeleton`
      + (pose ? ` (${pose.text.toLowerCase()})` : ""),
    s.width && s.height ? `${s.width}×${s.height}` : "", s.fps ? `${Math.round(s.fps * 100) / 100} fps` : "",
    statusText(s)].filter(Boolean);
  $("detail-facts").textContent = facts.join(" · ");
}

function showPin(s) {
  const b = $("detail-pin");
  b.setAttribute("aria-pressed", String(Boolean(s.pinned)));
  b.textContent = s.pinned ? "Pinned: kept" : "Pin (keep)";
}

async function showPrivacy(s) {
  const b = $("detail-private");
  b.hidden = true;
  if (!shell.can("wall")) return;
  try {
    const p = await api(`/api/sessions/${s.id}/privacy`);
    const mine = shell.me && shell.me.device && p.owner_device_id === shell.me.device.id;
    b.hidden = !(shell.can("admin") || p.owner_device_id === null || mine);
    b.setAttribute("aria-pressed", String(p.private));
    b.textContent = p.private ? "Private: only this screen" : "Make private";
  } catch { /* leave it hidden */ }
}

async function togglePin() {
  const s = state.current;
  if (!s) return;
  try {
    const updated = await api(`/api/sessions/${s.id}`, { method: "PATCH", body: { pinned: !s.pinned } });
    state.current = updated;
    replaceCard(updated);
    showPin(updated);
    toast(updated.pinned ? "Pinned: it is never deleted automatically." : "Unpinned.", "ok");
  } catch (err) {
    $("detail-error").textContent = err.message;
  }
}

async function togglePrivate() {
  const s = state.current;
  if (!s) return;
  const on = $("detail-private").getAttribute("aria-pressed") !== "true";
  try {
    await api(`/api/sessions/${s.id}/privacy`, { method: "PUT", body: { private: on } });
    await showPrivacy(s);
    toast(on ? "Private: only this screen and the admin see it." : "Visible to every paired screen.", "ok");
  } catch (err) {
    $("detail-error").textContent = err.message;
  }
}

function closeDetail() {
  if ($("detail").open) $("detail").close();
  state.current = null;
  if (window.location.hash) window.history.replaceState(null, "", window.location.pathname);
}

async function saveDetail(e) {
  e.preventDefault();
  const s = state.current;
  if (!s) return;
  const name = $("edit-name").value.trim();
  if (!name) {
    $("detail-error").textContent = "A session needs a name.";
    $("edit-name").focus();
    return;
  }
  const body = {};
  if (name !== s.name) body.name = name;
  if ($("edit-climber").value !== s.climber) body.climber = $("edit-climber").value;
  if ($("edit-description").value !== s.description) body.description = $("edit-description").value;
  if (!Object.keys(body).length) { closeDetail(); return; }
  $("detail-save").disabled = true;
  try {
    const updated = await api(`/api/sessions/${s.id}`, { method: "PATCH", body });
    replaceCard(updated);
    toast(`Saved “${updated.name}”`);
    closeDetail();
  } catch (err) {
    $("detail-error").textContent = err.status === 422
      ? "Check the fields: the name is 1–200 characters, the description at most 5000."
      : err.message;
    if (err.status === 404) removeCard(s.id);
  } finally {
    $("detail-save").disabled = false;
  }
}

function askDelete() {
  const s = state.current;
  if (!s) return;
  $("confirm-text").textContent = `“${s.name}” (${formatDuration(s.duration_s)}, `
    + `${formatDate(s.created_at)}) and its video and skeleton data will be removed from the `
    + "appliance. This cannot be undone.";
  $("confirm").showModal();
}

async function confirmDelete() {
  const s = state.current;
  $("confirm").close();
  if (!s) return;
  $("confirm-delete").disabled = true;
  try {
    await api(`/api/sessions/${s.id}`, { method: "DELETE" });
    toast(`Deleted “${s.name}”`);
    removeCard(s.id);
    closeDetail();
  } catch (err) {
    if (err.status === 404) { removeCard(s.id); closeDetail(); toast("It was already deleted."); }
    else $("detail-error").textContent = err.message;
  } finally {
    $("confirm-delete").disabled = false;
  }
}

// -- page -----------------------------------------------------------------------------------
$("more").addEventListener("click", loadPage);
$("refresh").addEventListener("click", reload);
$("banner-retry").addEventListener("click", () => loadPage()); // the banner goes once it loads
$("detail-form").addEventListener("submit", saveDetail);
$("detail-close").addEventListener("click", closeDetail);
$("detail").addEventListener("close", () => { state.current = null; });
$("detail-delete").addEventListener("click", askDelete);
$("confirm-cancel").addEventListener("click", () => $("confirm").close());
$("confirm-delete").addEventListener("click", confirmDelete);
$("detail-pin").addEventListener("click", togglePin);
$("detail-private").addEventListener("click", togglePrivate);
shell.addEventListener("online", () => { if (state.stats.failures) reload(); });

if ("IntersectionObserver" in window) {
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadPage();
  }, { root: $("page"), rootMargin: "400px" }).observe($("sentinel")); // #page scrolls
}

function openFromHash() {
  const m = window.location.hash.match(/^#id=(\d{1,15})$/);
  if (m) openDetail(Number(m[1]));
}
window.addEventListener("hashchange", openFromHash);

window.sessionsPage = { state, reload, loadPage, openDetail, shell };
loadPage().then(openFromHash);
