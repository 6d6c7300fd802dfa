// Holds the video back just long enough for each frame's skeleton to be there when the frame
// is shown.
//
// Pose inference (~20-50 ms on the appliance, more under load) finishes after the frame's
// encode, so a pose usually reaches the tablet later than its video frame would be shown.
// The page then has to draw an older pose on the newer frame. Instead, this asks the
// browser's jitter buffer for a minimum playout delay (RTCRtpReceiver.jitterBufferTarget,
// WebRTC Extensions §6; older Chrome: playoutDelayHint) sized from what it measures: for every
// pose, the time between its arrival and the display of its frame ("slack"; negative = the
// pose came too late). Every `intervalMs` the delay moves so that the 10th percentile of the
// slack sits at `marginMs` (a proportional step, at most +150/-100 ms) within [0, maxMs].
// With the skeleton switched off (`enabled = false`) the delay goes back to 0.

export class PlayoutSync {
  constructor({ marginMs = 15, maxMs = 300, intervalMs = 2000 } = {}) {
    this.enabled = true;
    this.marginMs = marginMs;
    this.maxMs = maxMs;
    this.targetMs = 0;
    this.receiver = null;
    this.samples = [];
    this.shown = new Map(); // rtp timestamp -> display time (ms)
    this.arrived = new Map(); // rtp timestamp -> pose arrival time (ms), frame not shown yet
    this.lastSlackP10 = null;
    this.supported = false;
    this._timer = setInterval(() => this.update(), intervalMs);
  }

  /** Use the receiver of a new connection (the delay starts again from 0). */
  attach(receiver) {
    this.receiver = receiver || null;
    this.targetMs = 0;
    this.samples = [];
    this.shown.clear();
    this.arrived.clear();
    this.supported = !!receiver && ("jitterBufferTarget" in receiver || "playoutDelayHint" in receiver);
    this._apply();
  }

  frameShown(ts, now) {
    this.shown.set(ts, now);
    if (this.shown.size > 300) this.shown.delete(this.shown.keys().next().value);
    const arrived = this.arrived.get(ts);
    if (arrived !== undefined) {
      this.samples.push(now - arrived);
      this.arrived.delete(ts);
    }
  }

  poseArrived(ts, now) {
    const shown = this.shown.get(ts);
    if (shown !== undefined) {
      this.samples.push(shown - now); // negative: the frame was on screen before its pose
    } else {
      this.arrived.set(ts, now);
      if (this.arrived.size > 300) this.arrived.delete(this.arrived.keys().next().value);
    }
  }

  update() {
    if (!this.supported) return;
    if (!this.enabled) {
      this.samples = [];
      if (this.targetMs !== 0) { this.targetMs = 0; this._apply(); }
      return;
    }
    if (this.samples.length < 10) return;
    const sorted = this.samples.slice().sort((a, b) => a - b);
    const p10 = sorted[Math.floor(sorted.length * 0.1)];
    this.lastSlackP10 = p10;
    this.samples = [];
    const step = Math.max(-100, Math.min(150, 0.6 * (this.marginMs - p10)));
    const target = Math.max(0, Math.min(this.maxMs, this.targetMs + step));
    if (Math.abs(target - this.targetMs) >= 5) {
      this.targetMs = Math.round(target);
      this._apply();
    }
  }

  _apply() {
    const r = this.receiver;
    if (!r) return;
    try {
      if ("jitterBufferTarget" in r) r.jitterBufferTarget = this.targetMs;
      else if ("playoutDelayHint" in r) r.playoutDelayHint = this.targetMs / 1000;
    } catch { /* out of range on this browser: keep the default */ }
  }
}
