// The live page (/) and the delayed view (/?mode=delayed[&delay=N], also /ui/delayed.html):
// WebRTC video with the skeleton drawn on the displayed frame, recording controls that say
// what they do. Talks only to the daemon that served it.
//
// - video + landmarks: WHEP; live: POST /api/whep; delayed: POST /api/whep/delayed?delay_s=N
//   (the daemon resends its already-encoded packets N s late with the landmarks delayed the
//   same way, so the same frame matching works); landmarks on the `landmarks` data channel;
// - each displayed frame's RTP timestamp (requestVideoFrameCallback metadata.rtpTimestamp)
//   picks the pose computed on that very frame;
// - recording status: pushed on the /api/live WebSocket (and in /api/health, polled by the
//   shell); commands: /api/recordings/* through ./api.js;
// - honest recording controls: "Start · includes the last 10 s" with a 0/5/10 s choice
//   clamped to what the buffer holds (recording.pre_roll_available_s), save-last offers only
//   what the buffer holds, the timer is the session's real duration, pre-roll included;
// - the appliance unreachable (shell "offline"): skeleton and picture cleared, controls
//   disabled; on "online" everything reconnects at once (no reload).

import { api } from "./api.js";
import { PoseBuffer, decodePose } from "./landmarks.js";
import { formatDuration } from "./replay-common.js";
import { initShell } from "./shell.js";
import { SkeletonOverlay } from "./skeleton.js";
import { PlayoutSync } from "./sync.js";
import { WhepPlayer } from "./whep.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const delayed = params.get("mode") === "delayed";
const shell = initShell({ page: delayed ? "delayed" : "live", title: delayed ? "Delayed view" : "Live" });

const video = $("video");
const overlay = new SkeletonOverlay($("overlay"), video);
const poses = new PoseBuffer(delayed ? 600 : 150);
const sync = new PlayoutSync();
const TOLERANCE_TICKS = 0.25 * 90000; // draw an older pose for at most 250 ms of video
const SAVE_STEPS = [5, 10, 15, 20, 30, 45, 60, 90, 120];
const PREROLL_CHOICES = [0, 5, 10];
const DELAY_CHOICES = [5, 10, 15, 20, 30];
const PREROLL_KEY = "climbd.live.preroll";

const state = {
  hello: null,
  scale: 10000,
  displayed: null, // {ts, width, height} of the frame on screen
  recording: { state: "unknown" },
  recordingAt: 0,
  saveSeconds: 10,
  preroll: null, // chosen pre-roll seconds (null = the appliance's default)
  startedPreroll: null, // pre-roll the running recording included
  delay: null,
  busy: false,
  stopping: false, // our own Stop is running (its toast says Saved, not the status push)
  online: true,
  lastSession: null,
  stats: { framesShown: 0, exactDraws: 0, approxDraws: 0, noPoseDraws: 0, posesReceived: 0,
           poseBytes: 0, wsMessages: 0, cleared: 0, reconnects: 0 },
};

// -- live or delayed video ---------------------------------------------------------------
function delaySetting() {
  const d = Number(params.get("delay") || params.get("delay_s"));
  return Number.isFinite(d) && d > 0 ? d : null;
}
state.delay = delayed ? delaySetting() : null;

function whepUrl() {
  if (!delayed) return "/api/whep";
  return state.delay ? `/api/whep/delayed?delay_s=${state.delay}` : "/api/whep/delayed";
}

const player = "RTCPeerConnection" in window ? new WhepPlayer(whepUrl()) : null;

function setConnection(kind, text) {
  const el = $("connection");
  el.dataset.state = kind;
  if (delayed && kind === "live") text = "Delayed";
  $("connection-text").textContent = text;
  $("pair-link").hidden = kind !== "unpaired";
}

function onPose(buffer) {
  const pose = decodePose(buffer, state.scale);
  if (!pose) return;
  if (player && !pose.rtp) return; // sent before this viewer's RTP origin was known
  state.stats.posesReceived++;
  state.stats.poseBytes += pose.bytes;
  poses.add(pose);
  if (player) sync.poseArrived(pose.timestamp, performance.now());
  const d = state.displayed;
  if (d && pose.timestamp === d.ts) render(); // the pose of the frame on screen came late
  if (!player) drawWithoutVideo(pose);
}

function render() {
  const d = state.displayed;
  if (!d || !state.online) return;
  const hit = d.ts === undefined ? (poses.latest() ? { pose: poses.latest(), exact: false } : null)
    : poses.find(d.ts, TOLERANCE_TICKS);
  if (!hit) state.stats.noPoseDraws++;
  else if (hit.exact) state.stats.exactDraws++;
  else state.stats.approxDraws++;
  overlay.draw(hit ? hit.pose : null, d.ts, hit ? hit.exact : false, d);
}

let frameHandle = null;
/** (Re)register for the next displayed frame (a new srcObject drops pending callbacks). */
function armFrames() {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  if (frameHandle !== null) video.cancelVideoFrameCallback(frameHandle);
  frameHandle = video.requestVideoFrameCallback(onVideoFrame);
}

function onVideoFrame(now, metadata) {
  frameHandle = null;
  state.stats.framesShown++;
  if (player) player.frameShown();
  state.displayed = { ts: metadata.rtpTimestamp, width: metadata.width, height: metadata.height };
  if (metadata.rtpTimestamp !== undefined) sync.frameShown(metadata.rtpTimestamp, now);
  render();
  armFrames();
}

function drawWithoutVideo(pose) {
  const h = state.hello || {};
  state.displayed = { ts: pose.timestamp, width: h.width || 720, height: h.height || 720 };
  render();
}

/** The appliance is gone: no stale picture, no stale skeleton. */
function clearPicture() {
  state.stats.cleared++;
  state.displayed = null;
  poses.clear();
  overlay.draw(null, null, false, { width: 1, height: 1 });
  video.srcObject = null;
}

if (player) {
  player.addEventListener("state", (e) => {
    setConnection(e.detail.state, e.detail.text);
    if (delayed && /WHEP 404/.test(e.detail.text)) {
      stageMessage("This appliance does not offer the delayed view yet.");
    }
  });
  player.addEventListener("track", (e) => {
    poses.clear(); // a new session has a new RTP timestamp origin
    sync.attach(e.detail.receiver);
    video.srcObject = e.detail.stream;
    video.play().catch(() => {});
    armFrames();
    stageMessage("");
  });
  player.addEventListener("hello", (e) => {
    state.hello = e.detail.hello;
    state.scale = e.detail.hello.scale || 10000;
    if (Array.isArray(e.detail.hello.connections)) overlay.connections = e.detail.hello.connections;
    if (delayed && typeof e.detail.hello.delay_s === "number") showDelay(e.detail.hello.delay_s);
  });
  player.addEventListener("pose", (e) => onPose(e.detail.pose));
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    armFrames();
  } else {
    const tick = () => { state.displayed = { ts: undefined }; render(); requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  }
  player.start();
} else {
  setConnection("offline", "No WebRTC: skeleton only");
}

function stageMessage(text) {
  $("stage-message").textContent = text;
  $("stage-message").hidden = !text;
}

// -- delayed view: how far behind ----------------------------------------------------------
function showDelay(seconds) {
  const s = Math.round(seconds * 10) / 10;
  $("delay-badge-text").textContent = `${s} s ago`;
  $("delay-badge").hidden = false;
  for (const b of document.querySelectorAll("[data-delay]")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.delay) === s));
  }
}

function buildDelayChoices(maxS, defaultS) {
  const box = $("delay-choices");
  const choices = DELAY_CHOICES.filter((d) => !maxS || d <= maxS);
  if (defaultS && !choices.includes(defaultS) && (!maxS || defaultS <= maxS)) {
    choices.push(defaultS);
    choices.sort((a, b) => a - b);
  }
  const key = choices.join(",");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(...choices.slice(-4).map((d) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.delay = String(d);
    b.textContent = `${d} s`;
    b.setAttribute("aria-pressed", String(d === (state.delay || defaultS)));
    b.addEventListener("click", () => setDelay(d));
    return b;
  }));
}

function setDelay(d) {
  state.delay = d;
  const url = new URL(window.location.href);
  url.searchParams.set("delay", String(d));
  window.history.replaceState(null, "", url.href);
  showDelay(d);
  if (player) {
    player.url = whepUrl();
    player.attempt = 0;
    player.start();
  }
}

if (delayed) {
  $("delay-row").hidden = false;
  showDelay(state.delay || 10);
  buildDelayChoices(null, state.delay || 10);
}

// -- WebSocket: recording status (and landmarks without WebRTC) ------------------------
let ws = null;
let wsAttempt = 0;
let wsTimer = null;

function connectSocket() {
  clearTimeout(wsTimer);
  if (ws) return;
  const url = new URL("/api/live", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(url.href);
  ws = sock;
  sock.binaryType = "arraybuffer";
  sock.onopen = () => {
    wsAttempt = 0;
    if (!player) sock.send(JSON.stringify({ type: "subscribe", landmarks: true }));
  };
  sock.onmessage = (ev) => {
    state.stats.wsMessages++;
    if (typeof ev.data !== "string") { if (!delayed) onPose(ev.data); return; }
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === "recording") updateRecording(msg);
    else if (msg.type === "hello" && !player) { state.hello = msg; state.scale = msg.scale || 10000; }
  };
  sock.onclose = () => {
    if (ws === sock) ws = null;
    const delay = Math.min(8000, 500 * 2 ** wsAttempt++);
    wsTimer = setTimeout(connectSocket, delay);
  };
}
connectSocket();

// -- the appliance coming and going ----------------------------------------------------------
shell.addEventListener("offline", () => {
  state.online = false;
  clearPicture();
  setConnection("offline", "Not reachable");
  updateControls();
});
shell.addEventListener("online", () => {
  state.online = true;
  state.stats.reconnects++;
  updateControls();
  if (player && !player.stopped) { player.attempt = 0; player.start(); }
  if (!ws) { wsAttempt = 0; connectSocket(); }
  refreshStatus();
  refreshLast();
});
let lastKick = 0;
shell.addEventListener("health", (e) => {
  const h = e.detail;
  // back after a restart: the camera runs again, so do not wait out the WHEP back-off
  const running = h.capture && h.capture.state === "running" && h.video && h.video.frames > 0;
  if (player && !player.stopped && running && ["reconnecting", "offline"].includes(player.state)
      && performance.now() - lastKick > 1500) {
    lastKick = performance.now();
    player.attempt = 0;
    player.start();
  }
  if (h.recording && (!ws || ws.readyState !== WebSocket.OPEN)) updateRecording(h.recording);
  else if (h.recording) noteBuffer(h.recording);
  const delay = h.live && h.live.delay;
  if (delayed && delay) {
    buildDelayChoices(delay.max_s, delay.default_s);
    if (!state.delay && delay.default_s) showDelay(delay.default_s);
  }
});

// -- recording controls ---------------------------------------------------------------
function elapsed() {
  const r = state.recording;
  if (r.state !== "recording") return 0;
  return (r.elapsed_s || 0) + (performance.now() - state.recordingAt) / 1000;
}

/** Seconds the buffer holds now (null = not known yet). */
function buffered() {
  const a = state.recording.pre_roll_available_s;
  return typeof a === "number" ? a : null;
}

function defaultPreroll() {
  const d = state.recording.pre_roll_default_s;
  return typeof d === "number" ? d : 10;
}

/** What Start will include, seconds: the choice, clamped to the buffer. */
function prerollToSend() {
  const want = state.preroll === null ? Math.min(10, defaultPreroll()) : state.preroll;
  const have = buffered();
  return have === null ? want : Math.max(0, Math.min(want, Math.floor(have)));
}

function noteBuffer(status) {
  for (const k of ["pre_roll_available_s", "buffer_max_s", "pre_roll_default_s"]) {
    if (typeof status[k] === "number") state.recording[k] = status[k];
  }
  updateControls();
}

function updateRecording(status) {
  const prev = state.recording;
  const wasRecording = prev.state === "recording";
  state.recording = { ...status };
  state.recordingAt = performance.now();
  const recording = status.state === "recording";
  if (recording && typeof status.pre_roll_s === "number") state.startedPreroll = status.pre_roll_s;
  if (!recording) state.startedPreroll = null;
  $("rec-badge").hidden = !recording;
  const el = $("rec-status");
  if (recording) {
    el.textContent = status.name ? `Recording “${status.name}”` : `Recording #${status.session_id}`;
    el.classList.remove("error");
  } else if (status.last_error) {
    el.textContent = "The last recording failed.";
    el.classList.add("error");
  } else {
    el.textContent = "Ready";
    el.classList.remove("error");
  }
  if (wasRecording && !recording) {
    refreshLast();
    // stopped elsewhere (the GPIO button, another screen, HTTP): offer Watch here too
    const id = prev.session_id || status.last_session_id;
    if (!state.stopping && id) offerWatch(id);
  }
  updateControls();
  tickTimer();
}

function updateControls() {
  const recording = state.recording.state === "recording";
  const off = !state.online || state.busy;
  const button = $("record");
  button.dataset.state = recording ? "recording" : "idle";
  button.disabled = off || state.recording.state === "unknown";
  $("record-label").textContent = recording ? "Stop" : "Start";
  const have = buffered();
  const pre = prerollToSend();
  if (recording) {
    const inc = state.startedPreroll;
    $("record-sub").textContent = inc ? `timer includes ${formatSeconds(inc)} before Start` : "timer from Start";
  } else {
    $("record-sub").textContent = pre ? `includes the last ${pre} s` : "from now";
  }
  for (const b of document.querySelectorAll("[data-preroll]")) {
    const s = Number(b.dataset.preroll);
    b.disabled = off || recording || (have !== null && s > 0 && s > Math.floor(have) + 0.5 && s !== 0);
    b.setAttribute("aria-pressed", String(s === pre));
  }
  // save-last: only what the buffer holds
  const max = have === null ? 0 : Math.floor(have);
  const steps = saveSteps(max);
  if (!steps.includes(state.saveSeconds)) state.saveSeconds = steps[steps.length - 1] || 0;
  $("save-seconds").textContent = String(state.saveSeconds);
  $("save-last").disabled = off || recording || !state.saveSeconds;
  $("save-less").disabled = off || recording || steps.indexOf(state.saveSeconds) <= 0;
  $("save-more").disabled = off || recording || steps.indexOf(state.saveSeconds) >= steps.length - 1;
  $("buffer-info").textContent = have === null ? "Buffer: –"
    : `Buffer holds the last ${formatSeconds(typeof state.recording.buffer_max_s === "number"
      ? Math.min(have, state.recording.buffer_max_s) : have)}`
      + (typeof state.recording.buffer_max_s === "number" ? ` (up to ${formatSeconds(state.recording.buffer_max_s)})` : "");
  $("session-name").disabled = !state.online;
}

/** The save-last choices the buffer can fill (its own length last if not a step). */
function saveSteps(max) {
  if (max < 1) return [];
  const steps = SAVE_STEPS.filter((s) => s <= max);
  if (!steps.includes(max) && (steps.length === 0 || max - steps[steps.length - 1] >= 1)) steps.push(max);
  return steps;
}

function formatSeconds(s) {
  s = Math.round(Number(s) || 0);
  return s < 60 ? `${s} s` : formatDuration(s);
}

function tickTimer() {
  const t = formatDuration(elapsed());
  $("timer").textContent = t;
  $("rec-badge-timer").textContent = t;
}
setInterval(tickTimer, 250);

async function command(path, body) {
  state.busy = true;
  updateControls();
  try {
    return await api(path, { method: "POST", body: body || {} });
  } catch (err) {
    if (err.status === 401) shell.toast("This screen is not paired yet.", {
      kind: "error", action: { label: "Pair", href: "/pair" } });
    else shell.toast(err.message, { kind: "error" });
    return null;
  } finally {
    state.busy = false;
    updateControls();
    refreshStatus();
  }
}

async function refreshStatus() {
  try {
    updateRecording(await api("/api/recordings/current"));
  } catch { /* the socket and the shell will tell */ }
}

async function refreshLast() {
  try {
    const page = await api("/api/sessions?limit=5&offset=0");
    const last = (page.items || []).find((s) => s.video_url && s.status !== "recording");
    state.lastSession = last || null;
    const a = $("replay-last");
    if (last) {
      a.href = watchUrl(last.id);
      a.replaceChildren("▶ Replay last", Object.assign(document.createElement("small"),
        { textContent: ` (${formatDuration(last.duration_s)})` }));
    } else {
      a.href = "/ui/sessions.html";
      a.textContent = "▶ Replay last";
    }
  } catch { /* keep the link as it is */ }
}

async function offerWatch(id, tries = 10) {
  try {
    const s = await api(`/api/sessions/${id}`);
    if (s.status === "recording") { // still being finished: ask again shortly
      if (tries > 0) setTimeout(() => offerWatch(id, tries - 1), 300);
      return;
    }
    refreshLast();
    shell.toast(`Saved “${s.name}” (${formatDuration(s.duration_s)})`, {
      kind: "ok", action: { label: "▶ Watch", href: watchUrl(s.id), id: "toast-watch" } });
  } catch { /* it may be private to another screen */ }
}

function watchUrl(id) {
  return `/ui/replay.html?id=${id}&loop=1&play=1`;
}

function sessionName() {
  const name = $("session-name").value.trim();
  return name ? name : null;
}

$("record").addEventListener("click", async () => {
  if (state.recording.state === "recording") {
    state.stopping = true;
    const s = await command("/api/recordings/stop").finally(() => {
      setTimeout(() => { state.stopping = false; }, 2000); // its status push comes later
    });
    if (s) {
      shell.toast(`Saved “${s.name}” (${formatDuration(s.duration_s)})`, {
        kind: "ok", action: { label: "▶ Watch", href: watchUrl(s.id), id: "toast-watch" } });
      refreshLast();
    }
  } else {
    const pre = prerollToSend();
    const s = await command("/api/recordings/start", { name: sessionName(), pre_roll_s: pre });
    if (s) {
      state.startedPreroll = typeof s.pre_roll_s === "number" ? s.pre_roll_s : pre;
      shell.toast(state.startedPreroll
        ? `Recording — it includes the last ${formatSeconds(state.startedPreroll)}`
        : "Recording", { kind: "ok" });
    }
  }
});

for (const b of document.querySelectorAll("[data-preroll]")) {
  b.addEventListener("click", () => {
    state.preroll = Number(b.dataset.preroll);
    try { localStorage.setItem(PREROLL_KEY, String(state.preroll)); } catch { /* private */ }
    updateControls();
  });
}
try {
  const saved = localStorage.getItem(PREROLL_KEY);
  if (saved !== null && PREROLL_CHOICES.includes(Number(saved))) state.preroll = Number(saved);
} catch { /* private mode */ }

$("save-less").addEventListener("click", () => {
  const steps = saveSteps(Math.floor(buffered() || 0));
  const i = steps.indexOf(state.saveSeconds);
  if (i > 0) state.saveSeconds = steps[i - 1];
  updateControls();
});
$("save-more").addEventListener("click", () => {
  const steps = saveSteps(Math.floor(buffered() || 0));
  const i = steps.indexOf(state.saveSeconds);
  if (i >= 0 && i < steps.length - 1) state.saveSeconds = steps[i + 1];
  updateControls();
});
$("save-last").addEventListener("click", async () => {
  const s = await command("/api/recordings/save-last", { seconds: state.saveSeconds, name: sessionName() });
  if (s) {
    shell.toast(`Saved the last ${formatDuration(s.duration_s)}`, {
      kind: "ok", action: { label: "▶ Watch", href: watchUrl(s.id), id: "toast-watch" } });
    refreshLast();
  }
});

// -- view toggles ---------------------------------------------------------------------
$("toggle-skeleton").addEventListener("click", (e) => {
  overlay.enabled = !overlay.enabled;
  sync.enabled = overlay.enabled; // no skeleton, no reason to hold the video back
  e.currentTarget.setAttribute("aria-pressed", String(overlay.enabled));
  overlay.redraw();
});

$("fullscreen").addEventListener("click", async () => {
  document.body.classList.add("controls-hidden");
  try { await document.documentElement.requestFullscreen(); } catch { /* not allowed */ }
});
$("stage").addEventListener("click", () => {
  if (!document.body.classList.contains("controls-hidden")) return;
  document.body.classList.remove("controls-hidden");
  if (document.fullscreenElement && !shell.kiosk) document.exitFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
  if (!document.fullscreenElement) document.body.classList.remove("controls-hidden");
});

// A hidden tablet page frees its viewer slot; it reconnects when shown again.
document.addEventListener("visibilitychange", () => {
  if (!player) return;
  if (document.hidden) player.stop();
  else player.start();
});
window.addEventListener("pagehide", () => { if (player) player.stop(); });

// Keep the screen on where the browser allows it (secure contexts only).
async function keepAwake() {
  try { if (navigator.wakeLock) await navigator.wakeLock.request("screen"); } catch { /* no */ }
}
keepAwake();
document.addEventListener("visibilitychange", () => { if (!document.hidden) keepAwake(); });

updateControls();
refreshStatus();
refreshLast();

// For diagnostics and the browser tests.
window.climbd = { player, poses, overlay, state, sync, shell, delayed };
