// Compare two attempts: side by side (two recorded videos aligned at their attempt starts,
// one play/pause/step/speed control driving both, skeletons on) or superposed (attempt A's
// skeleton drawn over attempt B's video, aligned at the start: the ghost over a recording).
//
// URL: compare.html?a=SESSION&b=SESSION[&at=IA,IB][&mode=over]
//   - at: attempt indices in A and B (default 0,0); a session without attempts is compared
//     from its start;
//   - b missing: the attempt before A's (an earlier attempt of the same session, else the
//     last attempt of the newest older session): "compare with the previous attempt";
//   - a missing: the two newest attempts.
//
// Time base: the shared position is the offset o (seconds) from the attempt starts; A shows
// its frame at startA + o, B at startB + o. Each video is a RecordedPlayer (frame-accurate
// seek and step from the frame table, its own stored skeleton per frame). While playing, A
// is the master: on each of A's frames B's position is checked, and when it is more than
// one frame off B is re-seeked (at most every 400 ms); pause and step re-align B exactly.
// In the superposed mode B is the master (A's video is hidden) and A's skeleton is looked up
// in A's pose windows at startA + (tB - startB) for every frame B shows.

import { initShell } from "./shell.js";
import { api } from "./api.js";
import { RecordedPlayer } from "./replay-player.js";
import { SkeletonOverlay } from "./skeleton.js";
import { mountTransport } from "./transport.js";
import { clamp, formatClock, formatDuration } from "./replay-common.js";

const shell = initShell({ page: "compare", title: "Compare attempts" });
mountTransport();
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const GHOST_COLOUR = "#ff3df0";
const RESYNC_MS = 400;

const state = {
  A: null, B: null, mode: params.get("mode") === "over" ? "over" : "side", rate: 1,
  lo: 0, hi: 0, lastResync: 0, resyncs: 0, ghost: null, ghostLast: null, message: null,
  candidates: [],
};
window.compare = state;

function showMessage(text) {
  state.message = text;
  $("message-text").textContent = text;
  $("message").hidden = false;
  $("controls").hidden = true;
}

function attemptLabel(s, i) {
  const a = (s.attempts || [])[i];
  const when = new Date(s.created_at * 1000).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  if (!a) return `${s.name} · whole session · ${when}`;
  const d = a.duration_s !== null && a.duration_s !== undefined ? formatDuration(a.duration_s) : "to the end";
  // name and number first, short: a narrow picker still shows which attempt it is
  return `${s.name} #${i + 1} · ${d} · ${when}`;
}

/** Attempts of recent sessions, newest first: [{session, index}]. */
async function recentAttempts() {
  const page = await api("/api/sessions?limit=50");
  const out = [];
  for (const s of page.items) {
    if (!s.video_url) continue;
    const n = (s.attempts || []).length;
    for (let i = n - 1; i >= 0; i--) out.push({ session: s, index: i });
  }
  return out;
}

async function choose() {
  const at = (params.get("at") || "").split(",").map((x) => Number.parseInt(x, 10));
  const a = Number.parseInt(params.get("a") || "", 10);
  const b = Number.parseInt(params.get("b") || "", 10);
  state.candidates = await recentAttempts().catch(() => []);
  const cands = state.candidates;
  if (Number.isFinite(a) && Number.isFinite(b)) {
    return [{ id: a, index: Number.isFinite(at[0]) ? at[0] : 0 },
      { id: b, index: Number.isFinite(at[1]) ? at[1] : 0 }];
  }
  if (Number.isFinite(a)) { // previous attempt of A
    const ia = Number.isFinite(at[0]) ? at[0] : 0;
    if (ia > 0) return [{ id: a, index: ia }, { id: a, index: ia - 1 }];
    const sa = await api(`/api/sessions/${a}`);
    const older = cands.filter((c) => c.session.id !== a && c.session.created_at < sa.created_at);
    if (!older.length) return [{ id: a, index: ia }, null];
    // the newest older attempt; the next ones are tried if its video cannot be played
    const picks = older.map((c) => ({ id: c.session.id, index: c.index }));
    return [{ id: a, index: ia }, picks[0], picks.slice(1, 6)];
  }
  if (cands.length >= 2) {
    return [{ id: cands[0].session.id, index: cands[0].index },
      { id: cands[1].session.id, index: cands[1].index }];
  }
  return [cands[0] ? { id: cands[0].session.id, index: cands[0].index } : null, null];
}

async function loadSide(pick, video, canvas, tag, colourName) {
  const s = await api(`/api/sessions/${pick.id}`);
  if (!s.video_url) throw new Error(`session “${s.name}” has no video`);
  const res = await api(`/api/sessions/${pick.id}/frames?format=bin`, { raw: true });
  const times = new Float64Array(await res.arrayBuffer());
  if (!times.length) throw new Error(`the video of “${s.name}” has no frame`);
  const att = (s.attempts || [])[pick.index] || null;
  video.src = s.video_url;
  await new Promise((resolve, reject) => {
    if (video.readyState >= 2) { resolve(); return; }
    video.addEventListener("loadeddata", resolve, { once: true });
    video.addEventListener("error", () => reject(new Error(`the video of “${s.name}” cannot be played`)), { once: true });
  });
  // built once the video plays, so a side that fails leaves no player on its canvas
  const player = new RecordedPlayer(video, canvas, s, times);
  tag.textContent = `${colourName}: ${attemptLabel(s, pick.index)}`;
  tag.title = tag.textContent;
  return { s, times, player, att, index: pick.index, start: att ? att.start_s : 0 };
}

// -- the shared position ------------------------------------------------------------------
function master() { return state.mode === "over" ? state.B : state.A; }
function other() { return state.mode === "over" ? null : state.B; }

/** Offset from its attempt start of the frame a side shows (or is seeking to), seconds. */
function offsetOf(side) {
  return side.times[side.player.index] - side.start;
}

function bounds() {
  const m = master();
  const { A, B } = state;
  const before = Math.min(A.start, B.start);
  const after = Math.min(A.player.duration - A.start, B.player.duration - B.start);
  state.lo = m.player.indexAt(m.start - before);
  state.hi = m.player.indexAt(m.start + Math.max(0, after - 1 / m.player.fps));
  const tl = $("timeline");
  tl.min = String(state.lo);
  tl.max = String(state.hi);
  $("total").textContent = formatClock(m.times[state.hi] - m.start);
}

/** Show offset o (seconds from the attempt starts) on both. */
function seekOffset(o) {
  const m = master();
  const i = clamp(m.player.indexAt(m.start + o + 1e-6), state.lo, state.hi);
  m.player.seekFrame(i);
  align(m.times[i] - m.start);
}

function align(o) {
  const s = other();
  if (s) s.player.seekTime(s.start + o);
  drawGhost();
}

function step(d) {
  pause();
  const m = master();
  const i = clamp(m.player.index + d, state.lo, state.hi);
  m.player.seekFrame(i);
  align(m.times[i] - m.start);
}

async function play() {
  const m = master();
  if (m.player.index >= state.hi) seekOffset(m.times[state.lo] - m.start);
  const s = other();
  for (const side of [m, s]) if (side) side.player.setRate(state.rate);
  await Promise.all([m.player.play(), s ? s.player.play() : null]);
  showPlay();
}

function pause() {
  const m = master();
  const s = other();
  m.player.pause();
  if (s) s.player.pause();
  align(offsetOf(m));
  showPlay();
}

function showPlay() {
  const playing = master().player.playing;
  $("play").textContent = playing ? "Pause" : "Play";
  $("play").setAttribute("aria-label", playing ? "Pause" : "Play");
}

function onMasterFrame(index) {
  const m = master();
  const o = m.times[index] - m.start;
  $("timeline").value = String(index);
  $("clock").textContent = (o < 0 ? "−" : "") + formatClock(Math.abs(o));
  const s = other();
  if (m.player.playing) {
    if (index >= state.hi) { pause(); return; }
    if (s && s.player.shown) {
      const want = s.start + o;
      const err = s.player.shown.mediaTime - want;
      const now = performance.now();
      if (Math.abs(err) > 1.0 / s.player.fps && now - state.lastResync > RESYNC_MS) {
        state.lastResync = now;
        state.resyncs++;
        s.player.video.currentTime = want + 0.5 / s.player.fps;
      }
    }
  }
  drawGhost();
}

// -- A's skeleton over B (superposed) ------------------------------------------------------
function drawGhost() {
  const g = state.ghost;
  if (!g) return;
  const { A, B } = state;
  if (state.mode !== "over" || !B.player.shown) { g.clear(); g.last = null; return; }
  const o = B.times[B.player.shown.index] - B.start;
  const ia = A.player.indexAt(A.start + o);
  const hit = A.player.poses.rowAt(A.times[ia], A.player.tolerance);
  A.player.poses.prefetch(A.times[ia], 1);
  const size = { width: B.player.shown.width || B.player.video.videoWidth,
    height: B.player.shown.height || B.player.video.videoHeight };
  g.draw(hit ? hit.pose : null, ia, Boolean(hit && hit.pose), size);
  state.ghostLast = { aIndex: ia, bIndex: B.player.shown.index, loaded: hit !== null };
}

function setMode(mode) {
  const was = state.mode;
  if (was === mode) return;
  const o = offsetOf(master());
  const playing = master().player.playing;
  if (playing) pause();
  state.mode = mode;
  $("page").dataset.mode = mode;
  $("mode-side").setAttribute("aria-pressed", String(mode === "side"));
  $("mode-over").setAttribute("aria-pressed", String(mode === "over"));
  bounds();
  seekOffset(o);
  drawGhost();
}

function setRate(r) {
  state.rate = r;
  for (const side of [state.A, state.B]) side.player.setRate(r);
  for (const b of document.querySelectorAll(".speeds [data-speed]")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === r));
  }
}

function metricsTable() {
  const rows = [
    ["Time on wall", (m) => (m.time_on_wall_s !== null ? formatDuration(m.time_on_wall_s) : "–")],
    ["Height gained", (m) => (m.height_gained_m !== null ? `${m.height_gained_m.toFixed(2)} m` : "–")],
    ["Hip path", (m) => (m.hip_path_m !== null ? `${m.hip_path_m.toFixed(2)} m` : "–")],
    ["Mean hip speed", (m) => (m.mean_hip_speed_mps !== null ? `${m.mean_hip_speed_mps.toFixed(2)} m/s` : "–")],
    ["Economy", (m) => (m.economy !== null ? `${Math.round(m.economy * 100)} %` : "–")],
    ["Pauses", (m) => String((m.pauses || []).length)],
  ];
  const dl = $("metrics");
  dl.textContent = "";
  const add = (tag, text, cls = "") => {
    const e = document.createElement(tag);
    e.textContent = text;
    if (cls) e.className = cls;
    dl.append(e);
  };
  add("dt", "", "head"); add("dd", "A", "head"); add("dd", "B", "head");
  const ma = (state.A.att && state.A.att.metrics) || null;
  const mb = (state.B.att && state.B.att.metrics) || null;
  for (const [name, fmt] of rows) {
    add("dt", name);
    add("dd", ma ? fmt(ma) : "–");
    add("dd", mb ? fmt(mb) : "–");
  }
}

function fillPickers() {
  for (const [id, side] of [["pick-a", state.A], ["pick-b", state.B]]) {
    const sel = $(id);
    sel.textContent = "";
    const seen = new Set();
    const add = (sid, idx, label) => {
      const key = `${sid}:${idx}`;
      if (seen.has(key)) return;
      seen.add(key);
      const o = document.createElement("option");
      o.value = key;
      o.textContent = label;
      if (sid === side.s.id && idx === side.index) o.selected = true;
      sel.append(o);
    };
    add(side.s.id, side.index, attemptLabel(side.s, side.index));
    for (const c of state.candidates) add(c.session.id, c.index, attemptLabel(c.session, c.index));
    sel.addEventListener("change", () => {
      const [sid, idx] = sel.value.split(":").map(Number);
      const a = id === "pick-a" ? [sid, idx] : [state.A.s.id, state.A.index];
      const b = id === "pick-b" ? [sid, idx] : [state.B.s.id, state.B.index];
      location.search = `?a=${a[0]}&b=${b[0]}&at=${a[1]},${b[1]}&mode=${state.mode}`;
    });
  }
}

function wire() {
  $("play").addEventListener("click", () => (master().player.playing ? pause() : play()));
  $("step-back").addEventListener("click", () => step(-1));
  $("step-fwd").addEventListener("click", () => step(1));
  $("back-1s").addEventListener("click", () => seekOffset(offsetOf(master()) - 1));
  $("fwd-1s").addEventListener("click", () => seekOffset(offsetOf(master()) + 1));
  $("timeline").addEventListener("input", (e) => {
    pause();
    const m = master();
    seekOffset(m.times[Number(e.target.value)] - m.start);
  });
  for (const b of document.querySelectorAll(".speeds [data-speed]")) {
    b.addEventListener("click", () => setRate(Number(b.dataset.speed)));
  }
  $("mode-side").addEventListener("click", () => setMode("side"));
  $("mode-over").addEventListener("click", () => setMode("over"));
  $("skeleton").addEventListener("click", () => {
    const on = $("skeleton").getAttribute("aria-pressed") !== "true";
    $("skeleton").setAttribute("aria-pressed", String(on));
    state.A.player.setSkeleton(on);
    state.B.player.setSkeleton(on);
  });
  $("swap").addEventListener("click", () => {
    location.search = `?a=${state.B.s.id}&b=${state.A.s.id}&at=${state.B.index},${state.A.index}&mode=${state.mode}`;
  });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === " ") { e.preventDefault(); $("play").click(); }
    if (e.key === "ArrowLeft") step(-1);
    if (e.key === "ArrowRight") step(1);
  });
  for (const side of [state.A, state.B]) {
    side.player.addEventListener("frame", (e) => {
      if (side === master()) onMasterFrame(e.detail.index);
    });
    side.player.addEventListener("state", () => showPlay());
    side.player.addEventListener("error", (e) => shell.toast(e.detail.message, { kind: "error" }));
  }
  state.A.player.poses.onload = () => { state.A.player.render(); drawGhost(); };
}

async function main() {
  let picks;
  try {
    picks = await choose();
  } catch (err) {
    showMessage(`The attempts cannot be listed: ${err.message}`);
    return;
  }
  if (!picks[0] || !picks[1]) {
    showMessage(picks[0]
      ? "There is no earlier attempt to compare this one with yet."
      : "No attempts to compare yet: record two climbs (or turn on hands-free recording).");
    return;
  }
  try {
    state.A = await loadSide(picks[0], $("video-a"), $("overlay-a"), $("tag-a"), "A");
    const tries = [picks[1], ...(picks[2] || [])];
    for (let k = 0; k < tries.length && !state.B; k++) {
      try {
        state.B = await loadSide(tries[k], $("video-b"), $("overlay-b"), $("tag-b"), "B");
      } catch (err) {
        if (k === tries.length - 1) throw err;
        $("video-b").removeAttribute("src");
      }
    }
  } catch (err) {
    showMessage(`These attempts cannot be compared: ${err.message}`);
    return;
  }
  state.ghost = new SkeletonOverlay($("ghost-b"), $("video-b"));
  state.ghost.colour = GHOST_COLOUR;
  $("page").dataset.mode = state.mode;
  $("mode-side").setAttribute("aria-pressed", String(state.mode === "side"));
  $("mode-over").setAttribute("aria-pressed", String(state.mode === "over"));
  wire();
  bounds();
  metricsTable();
  fillPickers();
  $("controls").hidden = false;
  seekOffset(0);
  state.ready = true;
}

main();
