// Ghost over live: a recorded session's skeleton drawn over the live WebRTC video, in its own
// colour, next to the live skeleton.
//
// Server side (climbd/ghost.py, climbd/api/ghost.py): the ghost plays on the live view's
// `landmarks` data channel, paced by the session's recorded timestamps. Each ghost pose
// carries the RTP timestamp of the live frame captured when it fell due, so it is drawn on
// exactly that frame (requestVideoFrameCallback's rtpTimestamp), like the live skeleton.
//
// Controls go to the server as JSON ({"type": "ghost", "action": ..., "seq": n}). The
// channel is lossy (partially reliable), so a control is re-sent until a ghost_state with
// its seq (or a later one) comes back; the server ignores a seq it has already applied.

import { PoseBuffer, decodePoints, decodePose } from "./landmarks.js";
import { SkeletonOverlay } from "./skeleton.js";
import { WhepPlayer } from "./whep.js";

export const KIND_GHOST = 2;
const FLAG_DETECTED = 1;
const FLAG_RTP = 2;
const FLAG_STILL = 4;
const HEADER_BYTES = 16;
const RESEND_MS = 400;
const MAX_TRIES = 6;
export const GHOST_COLOUR = "#ff2bd6"; // magenta: unlike the live skeleton's cyan/orange
const LIVE_TOLERANCE_TICKS = 0.25 * 90000;

/** Decode a binary ghost message (climbd/ghost.py); null if it is not one. */
export function decodeGhost(buffer, scale = 10000) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES || view.getUint8(0) !== KIND_GHOST) return null;
  const flags = view.getUint8(1);
  const count = view.getUint16(2, true);
  if (buffer.byteLength !== HEADER_BYTES + count * 8) return null;
  const points = decodePoints(view, count, scale); // the pose message's point layout
  return {
    detected: (flags & FLAG_DETECTED) !== 0 && count > 0,
    rtp: (flags & FLAG_RTP) !== 0,
    still: (flags & FLAG_STILL) !== 0,
    timestamp: view.getUint32(4, true),
    t: view.getUint32(8, true) / 1000,
    frame: view.getUint32(12, true),
    count,
    points,
  };
}

/** The ghost skeleton: the live overlay's drawing in one colour (climbd's magenta). */
export class GhostOverlay extends SkeletonOverlay {
  constructor(canvas, video) {
    super(canvas, video);
    this.colour = GHOST_COLOUR;
  }

  /** Draw a decoded ghost pose on the live frame with RTP timestamp `frameTs`. */
  draw(pose, frameTs, frameSize) {
    this._paint(pose, frameTs, false, frameSize);
  }

  describe(pose, frameTs, exact, points, rect) {
    return { frameTs, ghostFrame: pose ? pose.frame : null, ghostT: pose ? pose.t : null,
             points, rect, dpr: this.dpr };
  }
}

export class GhostView extends EventTarget {
  /**
   * @param {{video: HTMLVideoElement, liveCanvas: HTMLCanvasElement,
   *          ghostCanvas: HTMLCanvasElement}} els
   * @param {object} session  the ghost's session record
   */
  constructor(els, session) {
    super();
    this.video = els.video;
    this.session = session;
    this.liveOverlay = new SkeletonOverlay(els.liveCanvas, els.video);
    this.ghostOverlay = new GhostOverlay(els.ghostCanvas, els.video);
    this.livePoses = new PoseBuffer(150);
    this.ghosts = new PoseBuffer(300);
    this.scale = 10000;
    this.player = null;
    this.state = { state: "stopped", t: 0, speed: 1, loop: false, duration: session.duration_s,
      receivedAt: performance.now() };
    this.still = null; // the ghost pose to show while paused
    this.seq = 0;
    this.pending = null; // {seq, msg, tries, timer}
    this.wanted = null; // what to restore after a reconnect
    this.displayed = null;
    this.stats = { ghostMessages: 0, ghostBytes: 0, ghostLog: [], ghostDraws: 0, liveFrames: 0,
      errors: [] };
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  start() {
    if (!("RTCPeerConnection" in window)) {
      this._emit("connection", { state: "offline", text: "Ghost over live needs WebRTC, which this browser lacks." });
      return;
    }
    const player = new WhepPlayer("/api/whep");
    this.player = player;
    player.addEventListener("state", (e) => {
      this._emit("connection", e.detail);
      if (e.detail.state !== "live") this._clearPending();
    });
    player.addEventListener("track", (e) => {
      this.video.srcObject = e.detail.stream;
      this.video.play().catch(() => {});
    });
    player.addEventListener("hello", (e) => {
      this.scale = e.detail.hello.scale || 10000;
      if (Array.isArray(e.detail.hello.connections)) {
        this.liveOverlay.connections = e.detail.hello.connections;
        this.ghostOverlay.connections = e.detail.hello.connections;
      }
      this._channelReady();
    });
    player.addEventListener("pose", (e) => this._onBinary(e.detail.pose));
    player.addEventListener("message", (e) => this._onMessage(e.detail.data));
    if (!this._frameLoop) { // one requestVideoFrameCallback chain for the page's life
      this._frameLoop = true;
      this.video.requestVideoFrameCallback((n, m) => this._onFrame(n, m));
    }
    player.start();
  }

  stop() {
    this._clearPending();
    if (this.player) this.player.stop();
    this.player = null;
    this.video.srcObject = null;
  }

  _onBinary(buffer) {
    const kind = new DataView(buffer).getUint8(0);
    if (kind === KIND_GHOST) {
      const g = decodeGhost(buffer, this.scale);
      if (!g) return;
      this.stats.ghostMessages++;
      this.stats.ghostBytes += buffer.byteLength;
      const log = this.stats.ghostLog;
      log.push([performance.now(), g.t, g.frame, g.timestamp, g.still]);
      if (log.length > 3000) log.splice(0, log.length - 3000);
      if (g.still) {
        this.still = g;
        this._renderGhost();
      } else {
        this.ghosts.add(g);
      }
      return;
    }
    const pose = decodePose(buffer, this.scale);
    if (!pose) return;
    this.livePoses.add(pose);
    if (this.displayed && pose.timestamp === this.displayed.ts) this._renderLive();
  }

  _onFrame(now, md) {
    this.stats.liveFrames++;
    if (this.player) this.player.frameShown();
    this.displayed = { ts: md.rtpTimestamp, width: md.width, height: md.height };
    this._renderLive();
    this._renderGhost();
    this.video.requestVideoFrameCallback((n, m) => this._onFrame(n, m));
  }

  _renderLive() {
    const d = this.displayed;
    if (!d) return;
    const hit = d.ts === undefined ? null : this.livePoses.find(d.ts, LIVE_TOLERANCE_TICKS);
    this.liveOverlay.draw(hit ? hit.pose : null, d.ts, hit ? hit.exact : false, d);
  }

  _renderGhost() {
    const d = this.displayed || { ts: undefined, width: this.video.videoWidth, height: this.video.videoHeight };
    const s = this.state.state;
    let ghost = null;
    if (s === "playing") {
      // the latest ghost pose due at or before the frame on screen
      const fps = this.state.fps || 30;
      const tolerance = Math.max(0.3, 1.5 / (fps * (this.state.speed || 1))) * 90000;
      const hit = d.ts === undefined ? null : this.ghosts.find(d.ts, tolerance);
      ghost = hit ? hit.pose : null;
      if (!ghost && this.still && this.ghosts.items.length === 0) ghost = this.still;
    } else if (s === "paused" || s === "armed" || s === "ended") {
      ghost = this.still || this.ghosts.latest();
    }
    if (ghost) this.stats.ghostDraws++;
    this.ghostOverlay.draw(ghost, d.ts, d);
  }

  _onMessage(data) {
    if (data.type === "ghost_state") {
      const before = this.state.state;
      this.state = { ...data, receivedAt: performance.now() };
      if (data.state === "stopped") { this.ghosts.clear(); this.still = null; }
      if (data.state === "playing" && before !== "playing") this.still = null;
      if (this.pending && data.seq !== null && data.seq >= this.pending.seq) this._clearPending();
      this._renderGhost();
      this._emit("ghost", this.state);
    } else if (data.type === "error") {
      this.stats.errors.push(data);
      if (this.pending && data.seq === this.pending.seq) this._clearPending();
      this._emit("error", { message: data.error || "The ghost could not do that.", code: data.code });
    }
  }

  /** Session time the ghost shows now (extrapolated between state messages). */
  position() {
    const s = this.state;
    if (s.state !== "playing") return s.t || 0;
    const t = (s.t || 0) + ((performance.now() - s.receivedAt) / 1000) * (s.speed || 1);
    return s.loop && s.duration ? t % s.duration : Math.min(t, s.duration || t);
  }

  /** Send a control ({action, ...}); re-sent until acknowledged. */
  control(fields) {
    const msg = { type: "ghost", session_id: this.session.id, ...fields, seq: ++this.seq };
    if (fields.action === "stop" || fields.action === "state") delete msg.session_id;
    this._remember(msg);
    this._clearPending();
    this.pending = { seq: msg.seq, msg, tries: 0, timer: null };
    this._send();
    return msg.seq;
  }

  _remember(msg) {
    if (msg.action === "speed" || msg.action === "loop") {
      this.wanted = { ...(this.wanted || {}), ...(msg.speed !== undefined ? { speed: msg.speed } : {}),
        ...(msg.loop !== undefined ? { loop: msg.loop } : {}) };
    } else if (msg.action !== "state") {
      const arm = msg.action === "arm"
        ? { at: msg.at, attempt: msg.attempt, repeat: msg.repeat } : undefined;
      this.wanted = { ...(this.wanted || {}), action: msg.action, arm };
    }
  }

  _send() {
    const p = this.pending;
    if (!p || !this.player) return;
    if (p.tries >= MAX_TRIES) {
      this._clearPending();
      this._emit("error", { message: "The appliance does not answer the ghost controls." });
      return;
    }
    p.tries++;
    this.player.send(p.msg);
    p.timer = setTimeout(() => this._send(), RESEND_MS);
  }

  _clearPending() {
    if (this.pending && this.pending.timer) clearTimeout(this.pending.timer);
    this.pending = null;
  }

  /** A (re)connected channel: load the ghost where it was, paused unless it was playing. */
  _channelReady() {
    if (this._ready === this.player.channel) return;
    this._ready = this.player.channel;
    const w = this.wanted || {};
    const t = Math.min(this.position(), Math.max(0, (this.session.duration_s || 0) - 0.001));
    const base = { t, ...(w.speed !== undefined ? { speed: w.speed } : {}),
      ...(w.loop !== undefined ? { loop: w.loop } : {}) };
    if (w.action === "arm") this.control({ action: "arm", ...base, ...(w.arm || {}), t: undefined });
    else this.control({ action: w.action === "play" ? "play" : "pause", ...base });
  }

  play() { this.control({ action: "play" }); }
  pause() { this.control({ action: "pause" }); }
  seek(t) { this.control({ action: "seek", t: Math.max(0, t) }); }
  speed(s) { this.control({ action: "speed", speed: s }); }
  loop(on) { this.control({ action: "loop", loop: on }); }
  arm() { this.control({ action: "arm" }); }
  /**
   * Race attempt `attempt` (0-based index in the ghost session) from the live climber's
   * lift-off, again at every lift-off (`repeat`): climbd/ghost/wire.py.
   */
  armLiftoff(attempt = 0) { this.control({ action: "arm", at: "lift-off", attempt, repeat: true }); }

  setLiveSkeleton(on) { this.liveOverlay.enabled = on; this.liveOverlay.redraw(); }
  setGhost(on) { this.ghostOverlay.enabled = on; this.ghostOverlay.redraw(); }
}
