// The one way every page talks to the daemon: fetch + CSRF + errors + reachability.
//
// - State-changing requests (anything but GET/HEAD/OPTIONS) carry X-CSRF-Token, copied from
//   the readable `climbd_csrf` cookie (double-submit token of the paired-device or admin
//   cookie; see climbd/security/middleware.py) or from GET /api/auth/me's `csrf_token`.
// - Every failure becomes an ApiError with a sentence a climber can read (`message`), the
//   HTTP status (0 = the appliance could not be reached) and the server's error code.
// - Network failures and recoveries are announced on `reachability` ("offline"/"online"
//   events), so the shell can show its banner without waiting for its own poll.
//
// Usage:
//   import { api, ApiError } from "./api.js";
//   const s = await api("/api/sessions/3");                      // GET, parsed JSON
//   await api("/api/recordings/start", { method: "POST", body: { pre_roll_s: 5 } });

/** An API failure: `status` (0 = network), readable `message`, server `code`, `body`. */
export class ApiError extends Error {
  constructor(status, message, code = "", body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "";
    this.body = body;
  }

  /** True when the appliance could not be reached at all. */
  get network() {
    return this.status === 0;
  }
}

/** Default timeout of one request, ms (a dead appliance must not hang a tap). */
export const TIMEOUT_MS = 8000;

let csrfFromMe = null;

/** Remember the CSRF token of GET /api/auth/me (used when the cookie is not readable). */
export function setCsrfToken(token) {
  csrfFromMe = token || null;
}

/** The current CSRF token, or null (unpaired, or an API token client). */
export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)climbd_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : csrfFromMe;
}

/** Headers for a state-changing request: `extra` plus the CSRF token if there is one. */
export function csrfHeaders(extra = {}) {
  const token = csrfToken();
  return token ? { ...extra, "X-CSRF-Token": token } : { ...extra };
}

/** Fires "offline" (detail: {reason}) on the first network failure, "online" on recovery. */
export const reachability = new EventTarget();
let reachable = true;

/** Record the outcome of a request (also called by the shell's health poll). */
export function noteReachable(ok, reason = "") {
  if (ok === reachable) return;
  reachable = ok;
  reachability.dispatchEvent(new CustomEvent(ok ? "online" : "offline", { detail: { reason } }));
}

/** True unless the last request failed at the network level. */
export function isReachable() {
  return reachable;
}

/** Human text for a failed request (what the tablet shows). */
export function explain(status, body, fallback) {
  const server = body && (body.message || body.detail);
  if (status === 0) return "The appliance cannot be reached.";
  if (status === 401) return "This screen is not paired yet: open Settings to pair it.";
  if (status === 403) return server || "This screen is not allowed to do that.";
  if (status === 404) return server || "That no longer exists.";
  if (status === 429) return "The appliance is busy; try again in a moment.";
  if (status === 507) return server || "The disk is full: free some space first.";
  if (status >= 500 && !server) return "The appliance had a problem; try again.";
  return server || fallback || `Error ${status}`;
}

/**
 * fetch() for the JSON API.
 *
 * @param {string} path  URL (same origin)
 * @param {object} [opts]
 * @param {string} [opts.method="GET"]
 * @param {*} [opts.body]  JSON-encoded when given
 * @param {boolean} [opts.raw=false]  return the Response instead of parsed JSON
 * @param {AbortSignal} [opts.signal]
 * @param {number} [opts.timeout=TIMEOUT_MS]  ms; 0 = none
 * @param {object} [opts.headers]
 * @returns {Promise<*>} parsed JSON (null for 204), or the Response when `raw`
 * @throws {ApiError} on a non-2xx status or a network failure; AbortError when aborted
 */
export async function api(path, { method = "GET", body, raw = false, signal, timeout = TIMEOUT_MS,
  headers: extra = {} } = {}) {
  const headers = { ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) Object.assign(headers, csrfHeaders());
  const ctl = new AbortController();
  const onAbort = () => ctl.abort();
  if (signal) {
    if (signal.aborted) ctl.abort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }
  const timer = timeout ? setTimeout(() => ctl.abort("timeout"), timeout) : null;
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal: ctl.signal, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    noteReachable(false, "network");
    throw new ApiError(0, explain(0), "network");
  } finally {
    if (timer) clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", onAbort);
  }
  noteReachable(true);
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new ApiError(res.status, explain(res.status, data, res.statusText),
      data && data.error, data);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

/** GET /api/auth/me (also remembers its CSRF token). */
export async function whoAmI() {
  const me = await api("/api/auth/me");
  if (me && me.csrf_token) setCsrfToken(me.csrf_token);
  return me;
}

/** Rank of each role (climbd/security/access.py ACCESS_RANK). */
export const ROLE_RANK = { anonymous: 0, token: 1, wall: 2, admin: 3 };

/** True if `role` may do what needs `needed` ("wall", "admin", ...). */
export function roleAllows(role, needed) {
  return (ROLE_RANK[role] ?? 0) >= (ROLE_RANK[needed] ?? 3);
}
