// Landmark messages (climbd/streaming/landmarks.py, format v1) and the buffer that matches
// them with displayed video frames by RTP timestamp.
//
// Binary message, little-endian:
//   u8 kind (1) | u8 flags (bit0 detected, bit1 RTP timestamp) | u16 count |
//   u32 timestamp | u32 pts | u32 frame | count x (i16 x, i16 y, i16 z, u8 vis, u8 presence)
// x, y, z are scaled by `scale` (hello message, 10000); vis/presence 0..254, 255 = n/a.

export const KIND_POSE = 1;
export const FLAG_DETECTED = 1;
export const FLAG_RTP = 2;
export const HEADER_BYTES = 16;
export const POINT_BYTES = 8;

/**
 * The `count` landmarks after the 16-byte header of a pose or ghost message (same point
 * layout: i16 x, y, z scaled by `scale`, u8 visibility 0..254 or 255 = 1, u8 pad) as
 * Float32Array [x, y, z, visibility] * count.
 */
export function decodePoints(view, count, scale = 10000) {
  const points = new Float32Array(count * 4); // x, y, z, visibility
  for (let i = 0; i < count; i++) {
    const o = HEADER_BYTES + i * POINT_BYTES;
    const vis = view.getUint8(o + 6);
    points[i * 4] = view.getInt16(o, true) / scale;
    points[i * 4 + 1] = view.getInt16(o + 2, true) / scale;
    points[i * 4 + 2] = view.getInt16(o + 4, true) / scale;
    points[i * 4 + 3] = vis === 255 ? 1 : vis / 254;
  }
  return points;
}

/** Decode one binary pose message; returns null if it is not a valid v1 pose. */
export function decodePose(buffer, scale = 10000) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES || view.getUint8(0) !== KIND_POSE) return null;
  const flags = view.getUint8(1);
  const count = view.getUint16(2, true);
  if (buffer.byteLength !== HEADER_BYTES + count * POINT_BYTES) return null;
  const points = decodePoints(view, count, scale);
  return {
    detected: (flags & FLAG_DETECTED) !== 0,
    rtp: (flags & FLAG_RTP) !== 0,
    timestamp: view.getUint32(4, true),
    pts: view.getUint32(8, true),
    frame: view.getUint32(12, true),
    count,
    points,
    bytes: buffer.byteLength,
  };
}

/** Signed difference a - b of two u32 timestamps (RTP wraps at 2**32). */
export function tsDiff(a, b) {
  return (a - b) | 0;
}

/**
 * Recent poses keyed by timestamp; finds the pose of a displayed frame.
 * `find(ts)` returns the exact match, else the newest pose at most `toleranceTicks` older
 * than the frame (a pose that has not arrived yet must not be replaced by a future one).
 */
export class PoseBuffer {
  constructor(capacity = 150) {
    this.capacity = capacity;
    this.items = []; // ascending by timestamp
    this.byTs = new Map();
  }

  add(pose) {
    if (this.byTs.has(pose.timestamp)) return;
    this.byTs.set(pose.timestamp, pose);
    let i = this.items.length;
    while (i > 0 && tsDiff(this.items[i - 1].timestamp, pose.timestamp) > 0) i--;
    this.items.splice(i, 0, pose);
    while (this.items.length > this.capacity) this.byTs.delete(this.items.shift().timestamp);
  }

  clear() {
    this.items = [];
    this.byTs.clear();
  }

  find(ts, toleranceTicks) {
    const exact = this.byTs.get(ts);
    if (exact) return { pose: exact, exact: true };
    for (let i = this.items.length - 1; i >= 0; i--) {
      const d = tsDiff(ts, this.items[i].timestamp);
      if (d >= 0) return d <= toleranceTicks ? { pose: this.items[i], exact: false } : null;
    }
    return null;
  }

  latest() {
    return this.items.length ? this.items[this.items.length - 1] : null;
  }
}
