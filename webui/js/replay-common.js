// Shared by the sessions and replay pages: formatting and toasts. API calls: ./api.js (re-
// exported here for the older imports); toasts go to the shell's toast zone (./shell.js).

import { api } from "./api.js";
import { shell } from "./shell.js";

export { ApiError, api, explain } from "./api.js";

/** 75.3 -> "1:15", 3725 -> "1:02:05". */
export function formatDuration(s) {
  s = Math.max(0, Math.floor(Number(s) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** 3.456 -> "0:03.45" (hundredths, for the replay clock). */
export function formatClock(s) {
  s = Math.max(0, Number(s) || 0);
  const whole = Math.floor(s);
  const cs = String(Math.floor((s - whole) * 100)).padStart(2, "0");
  return `${formatDuration(whole)}.${cs}`;
}

/** Unix seconds -> local date and time, short. */
export function formatDate(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

/** Text that explains a session's status, or "" when it is a normal completed session. */
export function statusText(session) {
  switch (session.status) {
    case "recording": return "Recording now";
    case "processing": return "Processing";
    case "interrupted":
      return session.video_url ? "Interrupted (recovered)" : "Interrupted — video lost";
    case "failed": return "Failed" + (session.error ? `: ${session.error}` : "");
    default: return "";
  }
}

/** Show a short message in the shell's toast zone (kind "info", "ok" or "error"). */
export function toast(text, kind = "info", action = null) {
  shell.toast(text, { kind, action });
}

/** Clamp x into [lo, hi]. */
export function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}

/** How often a page asks again about a session whose pose is being filled in, ms. */
export const POSE_POLL_MS = 2000;

/**
 * The badge of a session whose pose is still being filled in, or null once it is complete.
 * pose_status (GET /api/sessions/{id}): "live" while recording (live pose may skip frames),
 * "backfilling" while the recorded video is analysed for them, "complete" after; a finished
 * session still "live" is about to be backfilled. Percent = frames_analyzed / frame_count.
 * @returns {{pct: number, text: string} | null}
 */
export function poseProgress(s) {
  if (!s || s.status === "recording" || !["live", "backfilling"].includes(s.pose_status)) return null;
  const pct = s.frame_count > 0
    ? Math.max(0, Math.min(99, Math.floor((100 * (s.frames_analyzed || 0)) / s.frame_count))) : 0;
  return { pct, text: `Analysing pose… ${pct} %` };
}

/**
 * Ask GET /api/sessions/{id} every POSE_POLL_MS while its pose is being filled in (or until
 * `until(session)` is true); calls `onUpdate(session)` with each answer, the last one too
 * (or `onGone()` if the session was deleted). Network failures just retry.
 * @returns {{stop: Function}}
 */
export function watchPose(id, onUpdate, { onGone = null, ms = POSE_POLL_MS,
  until = (s) => !poseProgress(s) } = {}) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      const s = await api(`/api/sessions/${id}`, { timeout: ms * 2 });
      if (stopped) return;
      onUpdate(s);
      if (until(s)) return;
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) { if (onGone) onGone(); return; }
    }
    timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return { stop() { stopped = true; clearTimeout(timer); } };
}
