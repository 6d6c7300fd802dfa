// Recorded poses for replay, loaded lazily by time window in the binary posecodec format.
//
// GET /api/sessions/{id}/poses?start=&end=&format=bin returns one chunk (climbd/storage/
// posecodec.py, version 1, little-endian):
//   header 16 B: "CPS1" | u8 version | u8 flags | u16 reserved | u32 n | u32 CRC-32 of body
//   body: f64 times[n] | i32 frames[n] | f32 image xyz[n][33][3] | f32 world xyz[n][33][3]
//         | f16 visibility,presence[n][33][2]
// 936 bytes per row. Every section starts on a multiple of its element size, so the body is
// read with typed-array views (no copy) on little-endian devices (all tablets), DataView
// otherwise.
//
// Windows are aligned (k*W <= t < (k+1)*W, W = 10 s by default), so consecutive windows never
// share a row and the browser/HTTP cache can reuse them. Only the windows around the playhead
// are fetched and at most `maxWindows` are kept.

import { api } from "./api.js";

/** How long one pose window request may take before it counts as failed, ms. */
export const POSE_WINDOW_TIMEOUT_MS = 30000;

export const MAGIC = 0x31535043; // "CPS1" read as little-endian u32
export const HEADER_BYTES = 16;
export const LANDMARKS = 33;
export const BYTES_PER_ROW = 8 + 4 + LANDMARKS * 3 * 4 * 2 + LANDMARKS * 2 * 2; // 936

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let CRC_TABLE = null;
function crc32(bytes) {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** IEEE 754 half precision (u16 bits) -> number. */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/**
 * Decode one chunk. Returns {n, times: Float64Array, frames: Int32Array, xyz: Float32Array
 * (n*33*3, image x, y normalised), vis: Float32Array (n*33)}; throws Error on a bad chunk.
 */
export function decodeChunk(buffer) {
  if (buffer.byteLength < HEADER_BYTES) throw new Error("pose chunk truncated");
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== MAGIC) throw new Error("not a pose chunk");
  if (view.getUint8(4) !== 1) throw new Error(`unknown pose chunk version ${view.getUint8(4)}`);
  const n = view.getUint32(8, true);
  if (buffer.byteLength !== HEADER_BYTES + n * BYTES_PER_ROW) {
    throw new Error(`pose chunk of ${n} rows has ${buffer.byteLength} bytes`);
  }
  if (crc32(new Uint8Array(buffer, HEADER_BYTES)) !== view.getUint32(12, true)) {
    throw new Error("pose chunk checksum mismatch");
  }
  const o = {
    times: HEADER_BYTES,
    frames: HEADER_BYTES + 8 * n,
    xyz: HEADER_BYTES + 12 * n,
    vp: HEADER_BYTES + 12 * n + 2 * LANDMARKS * 3 * 4 * n,
  };
  let times, frames, xyz, vpBits;
  if (LITTLE_ENDIAN) {
    times = new Float64Array(buffer, o.times, n);
    frames = new Int32Array(buffer, o.frames, n);
    xyz = new Float32Array(buffer, o.xyz, n * LANDMARKS * 3);
    vpBits = new Uint16Array(buffer, o.vp, n * LANDMARKS * 2);
  } else {
    times = new Float64Array(n);
    frames = new Int32Array(n);
    xyz = new Float32Array(n * LANDMARKS * 3);
    vpBits = new Uint16Array(n * LANDMARKS * 2);
    for (let i = 0; i < n; i++) {
      times[i] = view.getFloat64(o.times + 8 * i, true);
      frames[i] = view.getInt32(o.frames + 4 * i, true);
    }
    for (let i = 0; i < xyz.length; i++) xyz[i] = view.getFloat32(o.xyz + 4 * i, true);
    for (let i = 0; i < vpBits.length; i++) vpBits[i] = view.getUint16(o.vp + 2 * i, true);
  }
  const vis = new Float32Array(n * LANDMARKS);
  for (let i = 0; i < n * LANDMARKS; i++) vis[i] = halfToFloat(vpBits[2 * i]);
  return { n, times, frames, xyz, vis };
}

/** Index of the last element of sorted `arr` that is <= x, or -1. */
export function lastAtOrBefore(arr, x) {
  let lo = 0;
  let hi = arr.length - 1;
  let ans = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] <= x) { ans = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return ans;
}

/** The pose object SkeletonOverlay.draw expects, for row `i` of a decoded chunk. */
export function rowPose(chunk, i) {
  const points = new Float32Array(LANDMARKS * 4);
  for (let l = 0; l < LANDMARKS; l++) {
    points[l * 4] = chunk.xyz[(i * LANDMARKS + l) * 3];
    points[l * 4 + 1] = chunk.xyz[(i * LANDMARKS + l) * 3 + 1];
    points[l * 4 + 2] = chunk.xyz[(i * LANDMARKS + l) * 3 + 2];
    points[l * 4 + 3] = chunk.vis[i * LANDMARKS + l];
  }
  return { detected: true, count: LANDMARKS, points, timestamp: chunk.frames[i], t: chunk.times[i] };
}

export class PoseWindows {
  /**
   * @param {number} sessionId
   * @param {{windowS?: number, maxWindows?: number, duration?: number}} options
   */
  constructor(sessionId, { windowS = 10, maxWindows = 8, duration = Infinity } = {}) {
    this.sessionId = sessionId;
    this.windowS = windowS;
    this.maxWindows = maxWindows;
    this.duration = duration;
    this.windows = new Map(); // k -> {chunk} | {promise} | {error}
    this.onload = null; // called with k when a window arrives
    this.stats = { requests: 0, bytes: 0, rows: 0, failures: 0, decodeMs: 0 };
    this.lastError = null;
  }

  key(t) {
    return Math.max(0, Math.floor(t / this.windowS));
  }

  /** The decoded window holding time t, or null while it loads (the load starts now). */
  windowAt(t) {
    const k = this.key(t);
    const w = this.windows.get(k);
    if (w && w.chunk) {
      this.windows.delete(k); // LRU: most recent last
      this.windows.set(k, w);
      return w.chunk;
    }
    if (!w) this.load(k);
    return null;
  }

  /**
   * Start loading window k (no-op if loaded, loading or beyond the end; with `force`, load
   * it again, the old one still answering until the new one arrives).
   */
  load(k, force = false) {
    if (k < 0 || (!force && this.windows.has(k)) || k * this.windowS > this.duration) return;
    const start = k * this.windowS;
    const end = (k + 1) * this.windowS;
    const url = `/api/sessions/${this.sessionId}/poses?start=${start}&end=${end}&format=bin`;
    const old = this.windows.get(k);
    const entry = old && old.chunk ? { chunk: old.chunk } : {};
    this.stats.requests++;
    // api.js: same-origin credentials, the tablet's error sentences (ApiError) and the
    // shell's reachability banner, like every other request of the UI; a window may take a
    // while on a busy appliance, so it gets longer than api.js's default request timeout
    entry.promise = api(url, { raw: true, timeout: POSE_WINDOW_TIMEOUT_MS }).then(async (res) => {
      const buf = await res.arrayBuffer();
      const t0 = performance.now();
      entry.chunk = decodeChunk(buf);
      this.stats.decodeMs += performance.now() - t0;
      this.stats.bytes += buf.byteLength;
      this.stats.rows += entry.chunk.n;
      delete entry.promise;
      if (this.onload) this.onload(k);
    }).catch((err) => {
      this.stats.failures++;
      this.lastError = err.message || String(err);
      this.windows.delete(k);
      entry.error = this.lastError;
      if (this.onload) this.onload(k, this.lastError);
    });
    this.windows.set(k, entry);
    while (this.windows.size > this.maxWindows) {
      const oldest = this.windows.keys().next().value;
      this.windows.delete(oldest);
    }
  }

  /** Load every kept window again (the session's pose was filled in since they came). */
  reload() {
    for (const k of [...this.windows.keys()]) {
      if (!this.windows.get(k).promise) this.load(k, true);
    }
  }

  /** Load the windows around time t (the current one and the next in `direction`). */
  prefetch(t, direction = 1) {
    const k = this.key(t);
    this.windowAt(t);
    const into = (t - k * this.windowS) / this.windowS;
    if (direction >= 0 && into > 0.5) this.load(k + 1);
    if (direction < 0 && into < 0.5) this.load(k - 1);
  }

  /**
   * The row recorded for the frame shown at session time `t` (a row within `tolerance`
   * seconds of it): {pose} ; {pose: null} when that frame has no pose; null while loading.
   */
  rowAt(t, tolerance) {
    const chunk = this.windowAt(t);
    if (!chunk) return null;
    const i = lastAtOrBefore(chunk.times, t + tolerance);
    if (i >= 0 && Math.abs(chunk.times[i] - t) <= tolerance) return { pose: rowPose(chunk, i) };
    // a row stamped a few microseconds across a window boundary lives in the neighbour
    const k = this.key(t);
    const neighbour = t - k * this.windowS < tolerance ? k - 1
      : (k + 1) * this.windowS - t < tolerance ? k + 1 : null;
    if (neighbour !== null && neighbour >= 0) {
      const other = this.windowAt(neighbour * this.windowS);
      if (!other) return null;
      const j = lastAtOrBefore(other.times, t + tolerance);
      if (j >= 0 && Math.abs(other.times[j] - t) <= tolerance) return { pose: rowPose(other, j) };
    }
    return { pose: null };
  }
}
