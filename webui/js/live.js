// The live page: WebRTC video with the skeleton drawn on the displayed frame, connection
// state, recording controls. Talks only to the daemon that served it.
//
// - video + landmarks: WHEP (/api/whep), landmarks on the `landmarks` data channel;
// - each displayed frame's RTP timestamp (requestVideoFrameCallback metadata.rtpTimestamp)
//   picks the pose computed on that very frame;
// - recording status: pushed on the /api/live WebSocket; commands: /api/recordings/*;
// - without WebRTC, landmarks come over the WebSocket instead (skeleton on black).

import { PoseBuffer, decodePose } from "./landmarks.js";
import { SkeletonOverlay } from "./skeleton.js";
import { PlayoutSync } from "./sync.js";
import { WhepPlayer, csrfHeaders } from "./whep.js";

const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = new SkeletonOverlay($("overlay"), video);
const poses = new PoseBuffer(150);
const sync = new PlayoutSync();
const TOLERANCE_TICKS = 0.25 * 90000; // draw an older pose for at most 250 ms of video
const SAVE_STEPS = [5, 10, 15, 20, 30, 45, 60, 90, 120];

const state = {
  hello: null,
  scale: 10000,
  displayed: null, // {ts, width, height} of the frame on screen
  recording: { state: "unknown" },
  recordingAt: 0,
  saveIndex: 1,
  busy: false,
  stats: { framesShown: 0, exactDraws: 0, approxDraws: 0, noPoseDraws: 0, posesReceived: 0,
           poseBytes: 0, wsMessages: 0 },
};

// -- live video ------------------------------------------------------------------------
const player = "RTCPeerConnection" in window ? new WhepPlayer("/api/whep") : null;

function setConnection(kind, text) {
  const el = $("connection");
  el.dataset.state = kind;
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
  if (!d) return;
  const hit = d.ts === undefined ? (poses.latest() ? { pose: poses.latest(), exact: false } : null)
    : poses.find(d.ts, TOLERANCE_TICKS);
  if (!hit) state.stats.noPoseDraws++;
  else if (hit.exact) state.stats.exactDraws++;
  else state.stats.approxDraws++;
  overlay.draw(hit ? hit.pose : null, d.ts, hit ? hit.exact : false, d);
}

function onVideoFrame(now, metadata) {
  state.stats.framesShown++;
  if (player) player.frameShown();
  state.displayed = { ts: metadata.rtpTimestamp, width: metadata.width, height: metadata.height };
  if (metadata.rtpTimestamp !== undefined) sync.frameShown(metadata.rtpTimestamp, now);
  render();
  video.requestVideoFrameCallback(onVideoFrame);
}

function drawWithoutVideo(pose) {
  const h = state.hello || {};
  state.displayed = { ts: pose.timestamp, width: h.width || 720, height: h.height || 720 };
  render();
}

if (player) {
  player.addEventListener("state", (e) => setConnection(e.detail.state, e.detail.text));
  player.addEventListener("track", (e) => {
    poses.clear(); // a new session has a new RTP timestamp origin
    sync.attach(e.detail.receiver);
    video.srcObject = e.detail.stream;
    video.play().catch(() => {});
  });
  player.addEventListener("hello", (e) => {
    state.hello = e.detail.hello;
    state.scale = e.detail.hello.scale || 10000;
    if (Array.isArray(e.detail.hello.connections)) overlay.connections = e.detail.hello.connections;
  });
  player.addEventListener("pose", (e) => onPose(e.detail.pose));
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onVideoFrame);
  } else {
    const tick = () => { state.displayed = { ts: undefined }; render(); requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  }
  player.start();
} else {
  setConnection("offline", "No WebRTC: skeleton only");
}

// -- WebSocket: recording status (and landmarks without WebRTC) ------------------------
let ws = null;
let wsAttempt = 0;

function connectSocket() {
  const url = new URL("/api/live", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(url.href);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    wsAttempt = 0;
    if (!player) ws.send(JSON.stringify({ type: "subscribe", landmarks: true }));
  };
  ws.onmessage = (ev) => {
    state.stats.wsMessages++;
    if (typeof ev.data !== "string") { onPose(ev.data); return; }
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === "recording") updateRecording(msg);
    else if (msg.type === "hello" && !player) { state.hello = msg; state.scale = msg.scale || 10000; }
  };
  ws.onclose = () => {
    ws = null;
    const delay = Math.min(15000, 1000 * 2 ** wsAttempt++);
    setTimeout(connectSocket, delay);
  };
}
connectSocket();

// Without the socket, poll so the controls never show a stale state.
setInterval(async () => {
  if (ws && ws.readyState === WebSocket.OPEN) return;
  try {
    const res = await fetch("/api/recordings/current");
    if (res.ok) updateRecording(await res.json());
  } catch { /* offline */ }
}, 3000);

// -- recording controls ---------------------------------------------------------------
function formatTime(s) {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function elapsed() {
  const r = state.recording;
  if (r.state !== "recording") return 0;
  return (r.elapsed_s || 0) + (performance.now() - state.recordingAt) / 1000;
}

function updateRecording(status) {
  state.recording = status;
  state.recordingAt = performance.now();
  const recording = status.state === "recording";
  const button = $("record");
  button.dataset.state = recording ? "recording" : "idle";
  $("record-label").textContent = recording ? "Stop recording" : "Start recording";
  $("rec-badge").hidden = !recording;
  const el = $("rec-status");
  if (recording) {
    el.textContent = status.name ? `Recording “${status.name}”` : `Recording #${status.session_id}`;
    el.classList.remove("error");
  } else if (status.last_error) {
    el.textContent = status.last_error;
    el.classList.add("error");
  } else {
    el.textContent = status.last_session_id ? `Idle — last: #${status.last_session_id}` : "Idle";
    el.classList.remove("error");
  }
  $("save-last").disabled = recording || state.busy;
  const avail = status.pre_roll_available_s;
  $("save-hint").textContent = typeof avail === "number" ? `${Math.floor(avail)} s buffered` : "";
  tickTimer();
}

function tickTimer() {
  const t = formatTime(elapsed());
  $("timer").textContent = t;
  $("rec-badge-timer").textContent = t;
}
setInterval(tickTimer, 250);

let toastTimer = null;
function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

async function command(path, body) {
  state.busy = true;
  $("record").disabled = true;
  $("save-last").disabled = true;
  try {
    const res = await fetch(path, {
      method: "POST",
      headers: csrfHeaders({ "Content-Type": "application/json" }),
      credentials: "same-origin",
      body: JSON.stringify(body || {}),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      if (res.status === 401) toast("This tablet is not paired yet: tap “Pair this tablet”.");
      else toast(data.message || data.detail || `Error ${res.status}`);
      return null;
    }
    return data;
  } catch (err) {
    toast(`Daemon unreachable: ${err.message || err}`);
    return null;
  } finally {
    state.busy = false;
    $("record").disabled = false;
    $("save-last").disabled = state.recording.state === "recording";
    refreshStatus();
  }
}

async function refreshStatus() {
  try {
    const res = await fetch("/api/recordings/current");
    if (res.ok) updateRecording(await res.json());
  } catch { /* the socket will tell */ }
}

function sessionName() {
  const name = $("session-name").value.trim();
  return name ? name : null;
}

$("record").addEventListener("click", async () => {
  if (state.recording.state === "recording") {
    const s = await command("/api/recordings/stop");
    if (s) toast(`Saved session #${s.id} (${formatTime(s.duration_s)})`);
  } else {
    const s = await command("/api/recordings/start", { name: sessionName() });
    if (s) toast(`Recording session #${s.id}`);
  }
});

function showSaveSeconds() {
  $("save-seconds").textContent = SAVE_STEPS[state.saveIndex];
}
$("save-less").addEventListener("click", () => {
  state.saveIndex = Math.max(0, state.saveIndex - 1);
  showSaveSeconds();
});
$("save-more").addEventListener("click", () => {
  state.saveIndex = Math.min(SAVE_STEPS.length - 1, state.saveIndex + 1);
  showSaveSeconds();
});
$("save-last").addEventListener("click", async () => {
  const seconds = SAVE_STEPS[state.saveIndex];
  const s = await command("/api/recordings/save-last", { seconds, name: sessionName() });
  if (s) toast(`Saved the last ${formatTime(s.duration_s)} as session #${s.id}`);
});
showSaveSeconds();

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
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
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

// For diagnostics and the browser tests.
window.climbd = { player, poses, overlay, state, sync };
