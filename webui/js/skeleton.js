// Drawing the skeleton over the video from *image* landmarks (x, y normalised to the frame).
//
// The <video> uses `object-fit: contain`, so the picture is scaled by
// s = min(W / w, H / h) and centred: letterbox bars top/bottom or pillarbox bars left/right.
// A landmark (x, y) therefore lands at (left + x * w * s, top + y * h * s) in the element's
// CSS pixels; the canvas covers the same box at devicePixelRatio resolution.

// MediaPipe POSE_CONNECTIONS (also sent in the hello message).
export const DEFAULT_CONNECTIONS = [
  [0, 1], [1, 2], [2, 3], [3, 7], [0, 4], [4, 5], [5, 6], [6, 8], [9, 10], [11, 12],
  [11, 13], [13, 15], [15, 17], [15, 19], [15, 21], [17, 19], [12, 14], [14, 16], [16, 18],
  [16, 20], [16, 22], [18, 20], [11, 23], [12, 24], [23, 24], [23, 25], [24, 26], [25, 27],
  [26, 28], [27, 29], [28, 30], [29, 31], [30, 32], [27, 31], [28, 32],
];

const LEFT = new Set([1, 2, 3, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31]);
const MIN_VISIBILITY = 0.3;

/** The rectangle (CSS px, relative to the element) where `object-fit: contain` puts the video. */
export function containRect(elementWidth, elementHeight, videoWidth, videoHeight) {
  if (!videoWidth || !videoHeight || !elementWidth || !elementHeight) return null;
  const s = Math.min(elementWidth / videoWidth, elementHeight / videoHeight);
  const width = videoWidth * s;
  const height = videoHeight * s;
  return { left: (elementWidth - width) / 2, top: (elementHeight - height) / 2, width, height };
}

/** CSS-pixel positions of the landmarks inside `rect` (null for low-visibility points). */
export function project(points, count, rect) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const vis = points[i * 4 + 3];
    if (vis < MIN_VISIBILITY) { out.push(null); continue; }
    out.push([rect.left + points[i * 4] * rect.width, rect.top + points[i * 4 + 1] * rect.height]);
  }
  return out;
}

export class SkeletonOverlay {
  /** @param {HTMLCanvasElement} canvas  @param {HTMLVideoElement} video */
  constructor(canvas, video) {
    this.canvas = canvas;
    this.video = video;
    this.ctx = canvas.getContext("2d");
    this.connections = DEFAULT_CONNECTIONS;
    this.colour = null; // null: left side cyan, right side orange; a CSS colour: one colour
    this.enabled = true;
    this.dpr = 1;
    this.last = null; // what was drawn last (tests read it through window.climbd)
    this.resize();
    new ResizeObserver(() => { this.resize(); this.redraw(); }).observe(canvas);
  }

  resize() {
    this.dpr = window.devicePixelRatio || 1;
    const w = Math.round(this.canvas.clientWidth * this.dpr);
    const h = Math.round(this.canvas.clientHeight * this.dpr);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
  }

  clear() {
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Draw `pose` (decoded message) for the frame with RTP timestamp `frameTs`. */
  draw(pose, frameTs, exact, frameSize) {
    this._paint(pose, frameTs, exact, frameSize);
  }

  /** What `last` records about a drawing (tests read it); subclasses add their fields. */
  describe(pose, frameTs, exact, points, rect) {
    return { frameTs, poseTs: pose ? pose.timestamp : null, exact, points, rect, dpr: this.dpr };
  }

  _paint(pose, frameTs, exact, frameSize) {
    this.clear();
    this._pending = { pose, frameTs, exact, frameSize };
    const w = (frameSize && frameSize.width) || this.video.videoWidth;
    const h = (frameSize && frameSize.height) || this.video.videoHeight;
    const rect = containRect(this.canvas.clientWidth, this.canvas.clientHeight, w, h);
    if (!this.enabled || !pose || !pose.detected || !rect) {
      this.last = this.describe(pose, frameTs, exact, [], rect);
      return;
    }
    const pts = project(pose.points, pose.count, rect);
    const ctx = this.ctx;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.save();
    ctx.beginPath();
    ctx.rect(rect.left, rect.top, rect.width, rect.height);
    ctx.clip(); // landmarks off the picture (feet below the frame) stay off the bars
    const scale = Math.max(rect.width, rect.height);
    const lineWidth = Math.max(3, scale * 0.007);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const [a, b] of this.connections) {
      const p = pts[a];
      const q = pts[b];
      if (!p || !q) continue;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
      ctx.lineWidth = lineWidth + 3;
      ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
      ctx.strokeStyle = this.colour
        || (LEFT.has(a) && LEFT.has(b) ? "#00e5ff" : (!LEFT.has(a) && !LEFT.has(b) ? "#ff9f0a" : "#ffffff"));
      ctx.lineWidth = lineWidth;
      ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
    }
    const r = Math.max(4, scale * 0.009);
    for (let i = 0; i < pts.length; i++) {
      const p = pts[i];
      if (!p) continue;
      ctx.fillStyle = this.colour || "#ffffff";
      ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI); ctx.fill();
      if (this.colour) continue;
      ctx.fillStyle = LEFT.has(i) ? "#00e5ff" : "#ff9f0a";
      ctx.beginPath(); ctx.arc(p[0], p[1], r * 0.6, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.restore();
    this.last = this.describe(pose, frameTs, exact, pts, rect);
  }

  redraw() {
    if (this._pending) {
      const { pose, frameTs, exact, frameSize } = this._pending;
      this._paint(pose, frameTs, exact, frameSize);
    }
  }
}
