// Frame-accurate replay of a recorded session: its MP4 in a <video> element (HTTP range
// requests; why not WebRTC or MSE: see climbd/api/replay.py) with the stored skeleton of the
// frame on screen drawn over it.
//
// Time base: a session's video starts at 0 at its first keyframe, and its pose rows carry
// times on that same axis (seconds from the first keyframe). The frame table
// (GET /api/sessions/{id}/frames?format=bin: every frame's presentation time) turns the
// `mediaTime` that requestVideoFrameCallback reports for the frame on screen into a frame
// index, exactly, even for variable-frame-rate live recordings where index/fps drifts.
//
// - Seeking to frame i sets currentTime to the middle of the frame ((t[i] + t[i+1]) / 2), so
//   rounding can never land on a neighbour; rapid seeks (scrubbing) keep only the latest.
// - Frame stepping is a seek to the middle of frame i ± 1.
// - Slow motion uses playbackRate (0.1x-2x). Measured in Chromium here: at 0.1x and 0.25x
//   every frame is presented, at exactly the requested rate, so no timer-driven stepping is
//   needed (a seek per frame would also cost a decode from the keyframe).
// - The skeleton is drawn from the stored *image* landmarks of the frame on screen (matched
//   by time within a quarter frame), never from another frame: a frame without a stored
//   pose shows none.

import { SkeletonOverlay } from "./skeleton.js";
import { PoseWindows, lastAtOrBefore } from "./replay-poses.js";
import { clamp } from "./replay-common.js";

export const MIN_RATE = 0.1;
export const MAX_RATE = 2;
export const RATES = [0.1, 0.25, 0.5, 1, 2];
/** After a paused seek, how long to wait for its video-frame callback before reading the
 * frame from currentTime instead, ms (a callback normally comes within a display frame). */
export const SEEKED_FALLBACK_MS = 250;

export class RecordedPlayer extends EventTarget {
  /**
   * @param {HTMLVideoElement} video
   * @param {HTMLCanvasElement} canvas
   * @param {object} session  the API's session record
   * @param {Float64Array} times  presentation time of every frame, seconds
   */
  constructor(video, canvas, session, times) {
    super();
    this.video = video;
    this.session = session;
    this.times = times;
    this.n = times.length;
    this.fps = session.fps || (this.n > 1 ? (this.n - 1) / (times[this.n - 1] - times[0]) : 30);
    this.duration = Math.max(session.duration_s || 0, times[this.n - 1] + 1 / this.fps);
    this.tolerance = 0.25 / this.fps; // a pose row belongs to a frame within this, seconds
    this.overlay = new SkeletonOverlay(canvas, video);
    this.poses = new PoseWindows(session.id, { duration: this.duration });
    this.poses.onload = () => { if (this.waitingPose !== null) this.render(); };
    this.shown = null; // {index, mediaTime, width, height, at}
    this.target = null; // frame index a seek is heading to
    this.queued = null; // a seek requested while another one runs
    this.waitingPose = null;
    this.direction = 1;
    this.seek = null; // {index, start} of the last seek, until its frame is drawn
    this._seekedTimer = null;
    this.stats = {
      frames: 0, seeks: [], lastSeek: null, drawn: 0, noPose: 0,
      frameLog: [], // [performance.now(), index] of presented frames (last 2000)
      seekedFallbacks: 0, // seeks whose frame was taken from currentTime (see _onSeeked)
    };
    video.addEventListener("seeked", () => this._onSeeked());
    video.addEventListener("play", () => this._state());
    video.addEventListener("pause", () => this._state());
    video.addEventListener("ended", () => this._state());
    video.addEventListener("ratechange", () => this._state());
    video.requestVideoFrameCallback((now, md) => this._onFrame(now, md));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _state() {
    this._emit("state", { playing: !this.video.paused, ended: this.video.ended,
      rate: this.video.playbackRate });
  }

  /** Index of the frame shown at media time t (the last frame starting at or before t). */
  indexAt(t) {
    return clamp(lastAtOrBefore(this.times, t + 1e-4), 0, this.n - 1);
  }

  /** Middle of frame i: seeking there shows frame i whatever the rounding. */
  midTime(i) {
    i = clamp(i, 0, this.n - 1);
    return i < this.n - 1 ? (this.times[i] + this.times[i + 1]) / 2 : this.times[i] + 0.5 / this.fps;
  }

  get index() {
    return this.target !== null ? this.target : this.shown ? this.shown.index : 0;
  }

  get playing() {
    return !this.video.paused && !this.video.ended;
  }

  _onFrame(now, md) {
    this.video.requestVideoFrameCallback((n, m) => this._onFrame(n, m)); // first: never a broken chain
    this._presented(now, md);
  }

  /** Frame `md.mediaTime` is on screen (from a video-frame callback or the seeked fallback). */
  _presented(now, md) {
    clearTimeout(this._seekedTimer);
    const index = this.indexAt(md.mediaTime);
    const prev = this.shown ? this.shown.index : index;
    if (index !== prev) this.direction = index > prev ? 1 : -1;
    this.shown = { index, mediaTime: md.mediaTime, width: md.width, height: md.height, at: now };
    if (this.seek && this.seek.index === index && this.seek.videoMs === undefined) {
      this.seek.videoMs = performance.now() - this.seek.start;
    }
    this.stats.frames++;
    const log = this.stats.frameLog;
    log.push([now, index]);
    if (log.length > 2000) log.splice(0, log.length - 2000);
    if (!this.video.seeking && this.queued === null && this.target === index) this.target = null;
    if (this.playing) this.target = null;
    this.render();
    this._emit("frame", { index, time: this.times[index] });
  }

  /** The session's stored pose changed (backfill done): fetch it again and redraw. */
  reloadPoses() {
    this.poses.onload = () => this.render();
    this.poses.reload();
  }

  /** Draw the skeleton of the frame on screen (once its pose window is loaded). */
  render() {
    const s = this.shown;
    if (!s) return;
    const t = this.times[s.index];
    const hit = this.poses.rowAt(t, this.tolerance);
    this.poses.prefetch(t, this.direction);
    const size = { width: s.width || this.video.videoWidth, height: s.height || this.video.videoHeight };
    if (hit === null) { // window still loading: never show another frame's skeleton
      this.waitingPose = s.index;
      this.overlay.draw(null, s.index, false, size);
      return;
    }
    this.waitingPose = null;
    this.overlay.draw(hit.pose, s.index, hit.pose !== null, size);
    if (hit.pose) this.stats.drawn++; else this.stats.noPose++;
    if (this.seek && this.seek.index === s.index) {
      const ms = performance.now() - this.seek.start;
      this.stats.seeks.push(ms);
      if (this.stats.seeks.length > 500) this.stats.seeks.shift();
      // ms: to the frame with its skeleton; videoMs: to the frame alone; posesCached: the
      // pose window was already loaded when the seek began
      this.stats.lastSeek = { index: s.index, ms, videoMs: this.seek.videoMs,
        posesCached: this.seek.posesCached };
      this.seek = null;
    }
  }

  /** Show frame i (clamped), paused or not. */
  seekFrame(i) {
    i = clamp(Math.round(i), 0, this.n - 1);
    const from = this.index;
    if (i !== from) this.direction = i > from ? 1 : -1;
    this.target = i;
    this.seek = { index: i, start: performance.now(),
      posesCached: this.poses.windows.has(this.poses.key(this.times[i]))
        && Boolean(this.poses.windows.get(this.poses.key(this.times[i])).chunk) };
    this.poses.prefetch(this.times[i], this.direction);
    if (this.video.seeking) { this.queued = i; return; }
    // already on screen, and no finished seek elsewhere is about to present its frame (between
    // "seeked" and its video-frame callback, `shown` is still the old frame)
    if (this.shown && this.shown.index === i && !this.playing
        && this.indexAt(this.video.currentTime) === i) {
      this.target = null;
      this.render();
      return;
    }
    this.video.currentTime = this.midTime(i);
  }

  _onSeeked() {
    // Chromium now and then finishes a paused seek without a video-frame callback for its
    // frame (seen in headless runs: the page then never learns which frame it shows, and
    // the skeleton and counter stay on the old one). When none came SEEKED_FALLBACK_MS
    // after "seeked", the frame is the one at currentTime (a seek lands on midTime(i)).
    clearTimeout(this._seekedTimer);
    if (this.queued === null && this.video.paused) {
      this._seekedTimer = setTimeout(() => {
        if (!this.video.paused || this.video.seeking) return;
        this.stats.seekedFallbacks++;
        this._presented(performance.now(), { mediaTime: this.video.currentTime,
          width: this.video.videoWidth, height: this.video.videoHeight });
      }, SEEKED_FALLBACK_MS);
    }
    if (this.queued === null) return;
    const q = this.queued;
    this.queued = null;
    if (!this.shown || this.shown.index !== q || Math.abs(this.video.currentTime - this.midTime(q)) > 1e-3) {
      this.video.currentTime = this.midTime(q);
    }
  }

  /**
   * Show the frame at session time t (seconds). Returns a message when t was out of range
   * (and was clamped), else null.
   */
  seekTime(t) {
    if (!Number.isFinite(t)) return "That is not a time.";
    let note = null;
    if (t < 0) { note = "The session starts at 0:00."; t = 0; }
    const end = this.times[this.n - 1];
    if (t > end) {
      note = `That is past the end (${end.toFixed(2)} s): showing the last frame.`;
      t = end;
    }
    this.seekFrame(this.indexAt(t));
    return note;
  }

  /** Step `delta` frames (pauses first). */
  step(delta) {
    if (this.playing) this.video.pause();
    const i = clamp(this.index + delta, 0, this.n - 1);
    if (i === this.index) return false;
    this.seekFrame(i);
    return true;
  }

  /** Jump by `seconds` from the frame on screen. */
  jump(seconds) {
    return this.seekTime(this.times[this.index] + seconds);
  }

  /**
   * Set the playback rate; returns an error message (and changes nothing) when `rate` is
   * not a number between MIN_RATE and MAX_RATE.
   */
  setRate(rate) {
    const r = Number(rate);
    if (!Number.isFinite(r) || r < MIN_RATE || r > MAX_RATE) {
      return `Speed must be between ${MIN_RATE}x and ${MAX_RATE}x.`;
    }
    this.video.defaultPlaybackRate = r;
    this.video.playbackRate = r;
    return null;
  }

  async play() {
    if (this.video.ended || this.index >= this.n - 1) {
      this.seekFrame(0);
    }
    this.target = null;
    this.queued = null;
    try {
      await this.video.play();
    } catch (err) {
      this._emit("error", { message: `The video cannot play: ${err.message || err}` });
    }
  }

  /**
   * Pause on a whole frame. The media clock runs between presented frames, so once paused
   * the element may still paint the frame at currentTime, one past the last one reported
   * (seen in headless Chromium: a compare page then waited for a frame that never came).
   * Seeking to the frame at currentTime makes `index`, `shown` and the screen agree.
   */
  pause() {
    const was = this.playing;
    this.video.pause();
    if (was) this.seekFrame(this.indexAt(this.video.currentTime));
  }

  toggle() {
    if (this.playing) this.pause(); else this.play();
  }

  setSkeleton(on) {
    this.overlay.enabled = on;
    this.overlay.redraw();
  }
}
