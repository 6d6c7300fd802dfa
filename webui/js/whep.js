// A WHEP player (draft-ietf-wish-whep): one RTCPeerConnection, recvonly video plus the
// `landmarks` data channel, reconnecting by itself.
//
// Events (CustomEvent.detail): "state" {state, text}, "track" {stream, receiver}, "hello" {hello},
// "pose" {pose: ArrayBuffer}, "message" {data: object}.
// States: connecting, live, reconnecting, full, unpaired, offline.
//
// State-changing requests carry X-CSRF-Token, copied from the readable `climbd_csrf` cookie
// of a paired tablet (double-submit token checked by the daemon's security layer).

const GATHER_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 15000;
const STALL_MS = 5000;
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
const UNPAIRED_RETRY_MS = 15000;

import { csrfHeaders } from "./api.js";

export { csrfHeaders };

export class WhepPlayer extends EventTarget {
  constructor(url = "/api/whep") {
    super();
    this.url = url;
    this.pc = null;
    this.channel = null;
    this.location = null;
    this.attempt = 0;
    this.state = "idle";
    this.stopped = false;
    this.lastFrameAt = 0;
    this._timer = null;
    this._watch = null;
    this.stats = { connects: 0, failures: 0, posesReceived: 0, bytesReceived: 0 };
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, text) {
    this.state = state;
    this._emit("state", { state, text });
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  /** Note that a frame was displayed (stall detection). */
  frameShown() {
    this.lastFrameAt = performance.now();
  }

  async _connect() {
    clearTimeout(this._timer);
    await this._teardown();
    if (this.stopped) return;
    this._setState(this.attempt ? "reconnecting" : "connecting",
      this.attempt ? "Reconnecting…" : "Connecting…");
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    const channel = pc.createDataChannel("landmarks", { ordered: false, maxRetransmits: 0 });
    channel.binaryType = "arraybuffer";
    this.channel = channel;
    channel.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let data;
        try { data = JSON.parse(ev.data); } catch { return; }
        if (data.type === "hello") this._emit("hello", { hello: data });
        else this._emit("message", { data });
      } else {
        this.stats.posesReceived++;
        this.stats.bytesReceived += ev.data.byteLength;
        this._emit("pose", { pose: ev.data });
      }
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      this._emit("track", { stream, receiver: ev.receiver });
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const s = pc.connectionState;
      if (s === "connected") {
        this.attempt = 0;
        this.stats.connects++;
        this.lastFrameAt = performance.now();
        this._setState("live", "Live");
      } else if (s === "failed" || s === "closed") {
        this._retry("Connection lost");
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await this._gathered(pc);
      const res = await fetch(this.url, {
        method: "POST",
        headers: csrfHeaders({ "Content-Type": "application/sdp" }),
        credentials: "same-origin",
        body: pc.localDescription.sdp,
      });
      if (pc !== this.pc) return;
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        this._setState("unpaired", res.status === 401 ? "Not paired"
          : (body.message || "Not allowed"));
        await this._teardown();
        this._schedule(UNPAIRED_RETRY_MS);
        return;
      }
      if (res.status === 503 || res.status === 429) {
        const after = parseInt(res.headers.get("Retry-After") || "5", 10);
        const body = await res.json().catch(() => ({}));
        this._setState("full", body.detail || "Live view full");
        this._schedule(Math.max(1, after) * 1000);
        return;
      }
      if (res.status !== 201) {
        const body = await res.json().catch(() => ({}));
        throw new Error(res.status === 404 ? "WHEP 404: no such endpoint"
          : body.message || body.detail || `WHEP ${res.status}`);
      }
      const location = res.headers.get("Location");
      this.location = location ? new URL(location, new URL(this.url, window.location.href)).href : null;
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      this._watch = setInterval(() => this._check(), 1000);
      this._connectDeadline = performance.now() + CONNECT_TIMEOUT_MS;
    } catch (err) {
      if (pc === this.pc) this._retry(err.message || String(err));
    }
  }

  _gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(t); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const t = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  _check() {
    const pc = this.pc;
    if (!pc) return;
    const now = performance.now();
    if (pc.connectionState !== "connected") {
      if (now > this._connectDeadline) this._retry("Could not connect");
      return;
    }
    if (now - this.lastFrameAt > STALL_MS) this._retry("No video");
  }

  _retry(reason) {
    if (this.stopped) return;
    this.stats.failures++;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    this._setState(this.attempt > 2 ? "offline" : "reconnecting",
      `${reason} — retrying in ${Math.round(delay / 1000)} s`);
    this._teardown();
    this._schedule(delay);
  }

  _schedule(ms) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), ms);
  }

  async _teardown() {
    clearInterval(this._watch);
    this._watch = null;
    const pc = this.pc;
    const location = this.location;
    this.pc = null;
    this.channel = null;
    this.location = null;
    if (pc) pc.close();
    if (location) {
      try {
        await fetch(location, { method: "DELETE", keepalive: true, headers: csrfHeaders(),
          credentials: "same-origin" });
      } catch { /* gone */ }
    }
  }

  /** End the session (page hidden or closed): DELETE survives the page with keepalive. */
  stop() {
    this.stopped = true;
    clearTimeout(this._timer);
    this._teardown();
    this._setState("offline", "Stopped");
  }

  /** Send a JSON message on the landmarks channel (ping, hello). */
  send(obj) {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify(obj));
  }
}
