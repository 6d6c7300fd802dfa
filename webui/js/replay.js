// The replay page (/ui/replay.html?id=N[&mode=ghost][&t=seconds][&speed=x][&loop=1][&play=1]):
// one session,
// either its own video with its skeleton (RecordedPlayer) or its skeleton as a ghost over the
// live camera (GhostView). Every failure ends in a message on the page, never a blank one.
//
// Keys: Space/K play-pause, ← → one frame, Shift+← → or J/L one second, ↑ ↓ speed,
// S skeleton, G switch view, Home/End first/last frame. Touch: tap the picture to play or
// pause, drag across it to move frame by frame (a jog wheel), big buttons for the rest.
//
// `t` opens at that time (seconds from the session start, e.g. an attempt's start_s);
// `loop=1` loops; `play=1` starts playing; the speed last chosen on this screen is kept
// (localStorage) unless `speed` is given. Export / Share opens the export dialog (kinds: with
// skeleton, as recorded, slowed, pose CSV/JSON; progress from GET /api/exports/{id}), then a
// share link shown as a full-screen QR code (the server's /s/{token}/qr.svg).

import {
  api, clamp, formatClock, formatDate, formatDuration, poseProgress, statusText, toast, watchPose,
} from "./replay-common.js";
import { ExportDialog } from "./export-share.js";
import { initShell } from "./shell.js";
import { GhostView } from "./replay-ghost.js";
import { mountTransport } from "./transport.js";
import { MAX_RATE, MIN_RATE, RATES, RecordedPlayer } from "./replay-player.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const JOG_PX_PER_FRAME = 14;
const SPEED_KEY = "climbd.replay.speed";
const shell = initShell({ page: "replay", title: "Replay" });
mountTransport();

const state = {
  session: null,
  player: null, // RecordedPlayer
  ghost: null, // GhostView
  mode: null,
  message: null,
  recording: null,
  dragging: false,
  poseWatch: null, // watchPose() while the session's pose is being filled in
};

// -- messages -------------------------------------------------------------------------------
function showMessage(text, { ghost = false } = {}) {
  state.message = text;
  $("message-text").textContent = text;
  $("message-ghost").hidden = !ghost;
  $("message").hidden = false;
  $("replay-controls").hidden = true;
}

function hideMessage() {
  state.message = null;
  $("message").hidden = true;
}

// -- start ----------------------------------------------------------------------------------
async function main() {
  const raw = params.get("id");
  if (!raw || !/^\d{1,15}$/.test(raw)) {
    shell.setTitle("Replay");
    showMessage("No session was chosen: pick one from the sessions list.");
    return;
  }
  const id = Number(raw);
  try {
    state.session = await api(`/api/sessions/${id}`);
  } catch (err) {
    shell.setTitle(`Session ${id}`);
    showMessage(err.status === 404
      ? `Session ${id} does not exist: it may have been deleted.`
      : `Session ${id} cannot be opened: ${err.message}`);
    $("mode-ghost").disabled = true;
    return;
  }
  const s = state.session;
  document.title = `${s.name} — climbd replay`;
  shell.setTitle(s.name, [s.climber, formatDate(s.created_at), formatDuration(s.duration_s),
    statusText(s)].filter(Boolean).join(" · "));
  $("mode-ghost").disabled = !(s.frames_with_pose > 0);
  showPoseStatus(s);
  if (poseProgress(s)) {
    state.poseWatch = watchPose(s.id, (fresh) => {
      const wasAnalysing = Boolean(poseProgress(state.session));
      state.session = { ...state.session, ...fresh };
      showPoseStatus(fresh);
      if (wasAnalysing && !poseProgress(fresh)) { // complete: draw the filled-in skeleton
        $("mode-ghost").disabled = !(fresh.frames_with_pose > 0);
        if (state.player) state.player.reloadPoses();
      }
    });
  }
  await setMode(params.get("mode") === "ghost" && s.frames_with_pose > 0 ? "ghost" : "replay");
}

// "Analysing pose… N %" over the picture while the session's pose is filled in (pose_status
// "live"/"backfilling", GET /api/sessions/{id} asked every 2 s); hidden once complete.
function showPoseStatus(s) {
  const p = poseProgress(s);
  const b = $("pose-badge");
  b.hidden = !p;
  if (p) {
    b.textContent = p.text;
    b.style.setProperty("--pct", `${p.pct}%`); // the bar behind the text (replay.css)
  }
}

async function setMode(mode) {
  if (mode === state.mode) return;
  state.mode = mode;
  $("mode-replay").setAttribute("aria-pressed", String(mode === "replay"));
  $("mode-ghost").setAttribute("aria-pressed", String(mode === "ghost"));
  const url = new URL(window.location.href);
  if (mode === "ghost") url.searchParams.set("mode", "ghost"); else url.searchParams.delete("mode");
  window.history.replaceState(null, "", url.href);
  const ghost = mode === "ghost";
  for (const id of ["video", "overlay"]) $(id).hidden = ghost;
  for (const id of ["live", "live-overlay", "ghost-overlay"]) $(id).hidden = !ghost;
  $("ghost-controls").hidden = !ghost;
  if (ghost) {
    hideMessage();
    $("replay-controls").hidden = true;
    if (state.player) state.player.pause();
    openGhost();
  } else {
    if (state.ghost) state.ghost.stop();
    stopRecordingPoll();
    await openReplay();
  }
}

// -- replay of the recorded video -----------------------------------------------------------
async function openReplay() {
  const s = state.session;
  if (state.player) {
    if (!state.message) $("replay-controls").hidden = false;
    return;
  }
  const canGhost = s.frames_with_pose > 0;
  if (s.status === "recording") {
    showMessage("This session is still recording. Its replay opens once the recording stops.");
    return;
  }
  if (!s.video_url) {
    showMessage(`The video of this session was lost${s.error ? ` (${s.error})` : ""}.`
      + (canGhost ? " Its skeleton can still be shown as a ghost over the live camera." : ""),
    { ghost: canGhost });
    return;
  }
  let times;
  try {
    const res = await api(`/api/sessions/${s.id}/frames?format=bin`, { raw: true });
    times = new Float64Array(await res.arrayBuffer());
    if (!times.length) throw new Error("the video has no frame");
  } catch (err) {
    showMessage(`The video of this session cannot be read: ${err.message}`, { ghost: canGhost });
    return;
  }
  const video = $("video");
  const player = new RecordedPlayer(video, $("overlay"), s, times);
  state.player = player;
  window.replay.player = player;
  video.addEventListener("error", () => {
    const code = video.error ? video.error.code : 0;
    const why = { 2: "a network error", 3: "a decoding error", 4: "a format this browser cannot play" }[code]
      || "an error";
    showMessage(`The video cannot be played (${why}).`, { ghost: canGhost });
  });
  player.addEventListener("frame", (e) => showFrame(e.detail.index));
  player.addEventListener("state", () => showPlayState());
  player.addEventListener("error", (e) => toast(e.detail.message, "error"));
  const timeline = $("timeline");
  timeline.max = String(player.n - 1);
  $("total").textContent = formatClock(times[player.n - 1]);
  video.src = s.video_url;
  await new Promise((resolve) => {
    if (video.readyState >= 2) resolve();
    else {
      video.addEventListener("loadeddata", resolve, { once: true });
      video.addEventListener("error", resolve, { once: true });
    }
  });
  if (state.message) return;
  $("replay-controls").hidden = false;
  let speed = params.get("speed");
  if (speed === null) {
    try { speed = localStorage.getItem(SPEED_KEY); } catch { speed = null; }
  }
  if (speed !== null) {
    const err = player.setRate(Number(speed));
    if (err && params.get("speed") !== null) toast(err, "error");
  }
  setLoop(params.get("loop") === "1");
  showSpeed();
  const t = params.get("t");
  const note = t !== null ? player.seekTime(Number(t)) : (player.seekFrame(0), null);
  if (note) toast(note, "error");
  if (params.get("play") === "1") player.play();
}

function setLoop(on) {
  const v = $("video");
  v.loop = on;
  $("loop").setAttribute("aria-pressed", String(on));
}

function showFrame(index) {
  const p = state.player;
  $("clock").textContent = formatClock(p.times[index]);
  if (!state.dragging) $("timeline").value = String(index);
  $("frame-info").textContent = `frame ${index + 1} / ${p.n}`;
  const last = p.overlay.last;
  $("pose-info").textContent = !last || last.frameTs !== index ? ""
    : last.points.length ? "skeleton from this frame" : (p.waitingPose === index ? "loading skeleton…"
      : poseProgress(state.session) ? "skeleton not analysed yet" : "no skeleton on this frame");
  showCompareLink(p.times[index]);
}

// "Compare with previous attempt" (compare.html, attempts helper): the attempt on screen
// (the last one started at or before the frame) against the one before it.
function showCompareLink(t) {
  const link = $("compare-prev");
  if (!link || !((state.session && state.session.attempts) || []).length) return;
  const href = `/ui/compare.html?a=${state.session.id}&at=${attemptAt(t)}`;
  if (link.getAttribute("href") !== href) link.href = href; // per frame: write on change only
  link.hidden = false;
}

// The attempt (0-based) the replay or ghost is at: the last one started at or before `t`
// (the first if none has started yet).
function attemptAt(t) {
  const attempts = (state.session && state.session.attempts) || [];
  let i = 0;
  attempts.forEach((a, k) => { if (a.start_s <= t + 1e-3) i = k; });
  return i;
}

function showPlayState() {
  const p = state.player;
  const playing = p.playing;
  $("play").textContent = playing ? "Pause" : "Play";
  $("play").setAttribute("aria-label", playing ? "Pause" : "Play");
  showSpeed();
}

function showSpeed() {
  const rate = state.player ? state.player.video.playbackRate : 1;
  for (const b of document.querySelectorAll(".speeds [data-speed]")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === rate));
  }
}

function changeSpeed(direction) {
  const p = state.player;
  const rate = p.video.playbackRate;
  let i = RATES.findIndex((r) => r >= rate - 1e-9);
  if (i < 0) i = RATES.length - 1;
  const next = RATES[clamp(i + direction, 0, RATES.length - 1)];
  p.setRate(next);
  toast(`Speed ${next}×`);
}

function wireReplayControls() {
  const p = () => state.player;
  $("play").addEventListener("click", () => p() && p().toggle());
  $("step-back").addEventListener("click", () => p() && !p().step(-1) && toast("First frame"));
  $("step-fwd").addEventListener("click", () => p() && !p().step(1) && toast("Last frame"));
  $("back-1s").addEventListener("click", () => { const n = p() && p().jump(-1); if (n) toast(n); });
  $("fwd-1s").addEventListener("click", () => { const n = p() && p().jump(1); if (n) toast(n); });
  for (const b of document.querySelectorAll(".speeds [data-speed]")) {
    b.addEventListener("click", () => {
      const err = p() && p().setRate(Number(b.dataset.speed));
      if (err) toast(err, "error");
      else try { localStorage.setItem(SPEED_KEY, b.dataset.speed); } catch { /* private mode */ }
    });
  }
  $("loop").addEventListener("click", () => setLoop(!$("video").loop));
  $("skeleton").addEventListener("click", (e) => {
    if (!p()) return;
    const on = !p().overlay.enabled;
    p().setSkeleton(on);
    e.currentTarget.setAttribute("aria-pressed", String(on));
  });
  const timeline = $("timeline");
  timeline.addEventListener("pointerdown", () => { state.dragging = true; });
  const endDrag = () => { state.dragging = false; };
  timeline.addEventListener("pointerup", endDrag);
  timeline.addEventListener("pointercancel", endDrag);
  timeline.addEventListener("input", () => {
    if (!p()) return;
    if (p().playing) p().pause();
    p().seekFrame(Number(timeline.value));
  });

  // touch on the picture: tap = play/pause, horizontal drag = jog frame by frame
  const stage = $("stage");
  let jog = null;
  stage.addEventListener("pointerdown", (e) => {
    if (state.mode !== "replay" || !p() || state.message) return;
    jog = { x: e.clientX, moved: false, frames: 0, at: performance.now() };
    stage.setPointerCapture(e.pointerId);
  });
  stage.addEventListener("pointermove", (e) => {
    if (!jog) return;
    const frames = Math.trunc((e.clientX - jog.x) / JOG_PX_PER_FRAME);
    if (frames !== jog.frames) {
      p().step(frames - jog.frames);
      jog.frames = frames;
      jog.moved = true;
    }
  });
  const endJog = () => {
    if (jog && !jog.moved && performance.now() - jog.at < 400) p().toggle();
    jog = null;
  };
  stage.addEventListener("pointerup", endJog);
  stage.addEventListener("pointercancel", () => { jog = null; });
}

function onKey(e) {
  if (document.querySelector("dialog[open]")) return; // the export or QR dialog has the keys
  const el = e.target;
  if (el && ((el.tagName === "INPUT" && el.type !== "range") || el.tagName === "TEXTAREA")) return;
  // a focused button or timeline already acts on these keys itself: do not act twice
  if (el && el.tagName === "BUTTON" && (e.key === " " || e.key === "Enter")) return;
  if (el && el.type === "range" && e.key.startsWith("Arrow") && !e.shiftKey) return;
  if (e.key === "g" || e.key === "G") {
    if (!$("mode-ghost").disabled) setMode(state.mode === "ghost" ? "replay" : "ghost");
    return;
  }
  if (state.mode === "ghost") {
    const g = state.ghost;
    if (!g) return;
    if (e.key === " " || e.key === "k") { e.preventDefault(); toggleGhost(); }
    return;
  }
  const p = state.player;
  if (!p || state.message) return;
  const big = e.shiftKey;
  switch (e.key) {
    case " ": case "k": case "K": e.preventDefault(); p.toggle(); break;
    case "ArrowLeft": e.preventDefault(); if (big) p.jump(-1); else p.step(-1); break;
    case "ArrowRight": e.preventDefault(); if (big) p.jump(1); else p.step(1); break;
    case "j": case "J": p.jump(-1); break;
    case "l": case "L": p.jump(1); break;
    case "ArrowUp": e.preventDefault(); changeSpeed(1); break;
    case "ArrowDown": e.preventDefault(); changeSpeed(-1); break;
    case "Home": e.preventDefault(); p.pause(); p.seekFrame(0); break;
    case "End": e.preventDefault(); p.pause(); p.seekFrame(p.n - 1); break;
    case "s": case "S": $("skeleton").click(); break;
    default: break;
  }
}

// -- ghost over live ------------------------------------------------------------------------
function openGhost() {
  const s = state.session;
  if (!state.ghost) {
    const g = new GhostView({ video: $("live"), liveCanvas: $("live-overlay"),
      ghostCanvas: $("ghost-overlay") }, s);
    state.ghost = g;
    window.replay.ghost = g;
    g.addEventListener("connection", (e) => { $("connection").textContent = e.detail.text; });
    g.addEventListener("ghost", () => showGhostState());
    g.addEventListener("error", (e) => toast(e.detail.message, "error"));
    if (state.player) {
      g.state.t = state.player.times[state.player.index]; // start where the replay was
    }
    $("ghost-total").textContent = formatClock(s.duration_s);
    requestAnimationFrame(tickGhost);
  }
  state.ghost.start();
  startRecordingPoll();
}

function toggleGhost() {
  const g = state.ghost;
  if (g.state.state === "playing") g.pause(); else g.play();
}

function showGhostState() {
  const g = state.ghost;
  const st = g.state;
  const playing = st.state === "playing";
  $("ghost-play").textContent = playing ? "Pause ghost" : "Play ghost";
  $("ghost-loop").setAttribute("aria-pressed", String(Boolean(st.loop)));
  $("ghost-arm").setAttribute("aria-pressed", String(st.state === "armed" && st.arm_at !== "lift-off"));
  $("ghost-liftoff").setAttribute("aria-pressed", String(st.arm_at === "lift-off"));
  for (const b of document.querySelectorAll("[data-ghost-speed]")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.ghostSpeed) === st.speed));
  }
  const words = { playing: "playing", paused: "paused", ended: "at the end",
    armed: "waiting for the next recording", stopped: "stopped" };
  const race = st.arm_at === "lift-off" && st.race;
  const n = race ? race.attempt + 1 : 0;
  const what = !race ? `Ghost ${words[st.state] || st.state}`
    : st.state === "armed" ? `Ghost of attempt ${n} waiting for you to leave the ground`
      : st.state === "playing" ? `Racing attempt ${n} from lift-off`
        : st.state === "ended" ? `Ghost of attempt ${n} has landed` : `Ghost ${words[st.state] || st.state}`;
  $("ghost-info").textContent = what
    + (st.speed && st.speed !== 1 ? ` · ${st.speed}×` : "") + (st.loop ? " · loop" : "")
    + (st.aligned_to ? ` · aligned with session ${st.aligned_to}` : "");
}

function tickGhost() {
  const g = state.ghost;
  if (g && state.mode === "ghost") {
    const t = g.position();
    const d = g.state.duration || state.session.duration_s || 1;
    $("ghost-clock").textContent = formatClock(t);
    if (!state.ghostDragging) $("ghost-timeline").value = String(Math.round((t / d) * 1000));
  }
  requestAnimationFrame(tickGhost);
}

function wireGhostControls() {
  const g = () => state.ghost;
  $("ghost-play").addEventListener("click", () => g() && toggleGhost());
  $("ghost-back").addEventListener("click", () => g() && g().seek(Math.max(0, g().position() - 1)));
  $("ghost-fwd").addEventListener("click", () => {
    if (!g()) return;
    const d = g().state.duration || state.session.duration_s;
    const t = g().position() + 1;
    if (t > d) { toast("That is past the end of the ghost."); return; }
    g().seek(t);
  });
  for (const b of document.querySelectorAll("[data-ghost-speed]")) {
    b.addEventListener("click", () => g() && g().speed(Number(b.dataset.ghostSpeed)));
  }
  $("ghost-loop").addEventListener("click", () => g() && g().loop(!g().state.loop));
  $("ghost-arm").addEventListener("click", () => {
    if (!g()) return;
    if (g().state.state === "armed" && g().state.arm_at !== "lift-off") g().pause(); else g().arm();
  });
  $("ghost-liftoff").addEventListener("click", () => {
    if (!g()) return;
    if (g().state.arm_at === "lift-off") g().pause(); else g().armLiftoff(attemptAt(g().position()));
  });
  $("live-skeleton").addEventListener("click", (e) => {
    if (!g()) return;
    const on = !g().liveOverlay.enabled;
    g().setLiveSkeleton(on);
    e.currentTarget.setAttribute("aria-pressed", String(on));
  });
  const timeline = $("ghost-timeline");
  timeline.addEventListener("pointerdown", () => { state.ghostDragging = true; });
  timeline.addEventListener("change", () => {
    state.ghostDragging = false;
    if (!g()) return;
    const d = g().state.duration || state.session.duration_s;
    g().seek((Number(timeline.value) / 1000) * d);
  });
  $("ghost-record").addEventListener("click", async () => {
    const button = $("ghost-record");
    button.disabled = true;
    try {
      if (state.recording && state.recording.state === "recording") {
        const s = await api("/api/recordings/stop", { method: "POST", body: {} });
        toast(`Saved session ${s.id} (${formatDuration(s.duration_s)})`);
      } else {
        if (g() && g().state.state !== "armed") g().arm();
        const s = await api("/api/recordings/start", { method: "POST", body: {} });
        toast(`Recording session ${s.id} with the ghost of “${state.session.name}”`);
      }
    } catch (err) {
      toast(err.message, "error");
    } finally {
      button.disabled = false;
      pollRecording();
    }
  });
}

let recordingTimer = null;
async function pollRecording() {
  try {
    state.recording = await api("/api/recordings/current");
  } catch {
    state.recording = null;
  }
  const rec = state.recording && state.recording.state === "recording";
  $("ghost-record").dataset.state = rec ? "recording" : "idle";
  $("ghost-record-label").textContent = rec ? "Stop recording" : "Record + ghost";
}

function startRecordingPoll() {
  stopRecordingPoll();
  pollRecording();
  recordingTimer = setInterval(pollRecording, 1000);
}

function stopRecordingPoll() {
  clearInterval(recordingTimer);
  recordingTimer = null;
}

// -- page -----------------------------------------------------------------------------------
$("mode-replay").addEventListener("click", () => setMode("replay"));
$("mode-ghost").addEventListener("click", () => setMode("ghost"));
$("message-ghost").addEventListener("click", () => setMode("ghost"));
const exporter = new ExportDialog(shell, () => state.session);
$("export").addEventListener("click", () => { if (state.player) state.player.pause(); exporter.open(); });
document.addEventListener("keydown", onKey);
wireReplayControls();
wireGhostControls();
// a hidden tablet page frees its live viewer slot; it comes back when shown again
document.addEventListener("visibilitychange", () => {
  if (state.mode !== "ghost" || !state.ghost) return;
  if (document.hidden) state.ghost.stop(); else state.ghost.start();
});
window.addEventListener("pagehide", () => { if (state.ghost) state.ghost.stop(); });

// For diagnostics and the browser tests.
window.replay = { state, player: null, ghost: null, exporter, shell, limits: { MIN_RATE, MAX_RATE } };
main().catch((err) => showMessage(`The replay failed to open: ${err.message || err}`));
