// Shared by the sessions and replay pages: API calls with clear errors, formatting, toasts.
//
// State-changing requests carry the CSRF token of the paired-device cookie (the security
// middleware wants it in X-CSRF-Token, copied from the readable `climbd_csrf` cookie).

/** An API failure with the server's message and HTTP status (0 = network). */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || "";
  }
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)climbd_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : null;
}

/** Human text for a failed request (what the tablet shows). */
export function explain(status, body, fallback) {
  if (status === 401) return "This tablet is not paired yet: open Pair (/pair) to pair it.";
  if (status === 403) return (body && body.message) || "Not allowed on this tablet.";
  if (status === 429) return "The appliance is busy; try again in a moment.";
  return (body && (body.message || body.detail)) || fallback || `Error ${status}`;
}

/**
 * fetch() for the JSON API. Returns parsed JSON (or the Response when `raw`).
 * Throws ApiError with the server's message on any non-2xx status or network failure.
 */
export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") {
    const token = csrfToken();
    if (token) headers["X-CSRF-Token"] = token;
  }
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "The appliance cannot be reached (network).", "network");
  }
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new ApiError(res.status, explain(res.status, data, res.statusText),
      data && data.error);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

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

let toastTimer = null;
/** Show a short message in the page's #toast element. */
export function toast(text, kind = "info") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** Clamp x into [lo, hi]. */
export function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}
