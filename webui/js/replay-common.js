// Shared by the sessions and replay pages: formatting and toasts. API calls: ./api.js (re-
// exported here for the older imports); toasts go to the shell's toast zone (./shell.js).

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
