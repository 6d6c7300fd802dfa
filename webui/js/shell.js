// The app shell every page shares: persistent navigation (Live, Delayed, Sessions, Compare,
// Settings), one top bar whose title zone also shows the toasts (so a toast never covers a
// control and never moves anything), a status banner in plain sentences from /api/health,
// the caller's role from /api/auth/me, the admin PIN pad and kiosk mode.
//
// Usage (every page, as early as possible):
//   import { initShell } from "./shell.js";
//   const shell = initShell({ page: "sessions", title: "Sessions" });
//   shell.toast("Saved", { action: { label: "Watch", href: "/ui/replay.html?id=3" } });
//   shell.addEventListener("online", () => ...);   // also "offline", "health", "me"
//   if (shell.can("admin")) ...;                   // role checks; or mark elements
//   <button data-needs="admin">Delete</button>     // hidden unless the role allows it
//
// Layout: <body class="shell"> holds the page's content in <main class="shell-page">; the
// shell adds the bar, the banner and the nav around it (CSS grid in /ui/shell.css: a rail on
// the left in landscape, a tab bar at the bottom in portrait and on phones).
//
// States (the banner, on every page): the appliance unreachable (health poll fails; shown
// within POLL_MS + POLL_TIMEOUT_MS), safe mode, camera lost/stalled, disk below the recording
// floor, pose stopped, the last recording failed.
//
// Kiosk (?kiosk=1, kept for the tab in sessionStorage; ?kiosk=0 ends it): admin actions are
// hidden, the first tap goes full screen (an "Exit full screen" button stays visible), and
// after `?idle=N` s (default KIOSK_IDLE_S) without a touch the page returns to the live view
// (or the delayed view when the kiosk started there or `?home=delayed`).

import { ApiError, api, isReachable, noteReachable, reachability, roleAllows, whoAmI } from "./api.js";

export const POLL_MS = 1000;
export const POLL_TIMEOUT_MS = 1500;
export const KIOSK_IDLE_S = 90;
/** The tablet locks admin actions again after this long without a touch, seconds. */
export const ADMIN_LOCK_S = 300;
export const TOAST_MS = 5000;

const ICONS = {
  live: '<circle cx="12" cy="12" r="5"/><path d="M2 12a10 10 0 0 1 20 0" fill="none" stroke-width="2"/>',
  delayed: '<circle cx="12" cy="13" r="8" fill="none" stroke-width="2.4"/><path d="M12 8v5l3 2" fill="none" stroke-width="2.4"/><path d="M9 2h6" stroke-width="2.4"/>',
  sessions: '<rect x="3" y="4" width="18" height="4" rx="1"/><rect x="3" y="10" width="18" height="4" rx="1"/><rect x="3" y="16" width="18" height="4" rx="1"/>',
  compare: '<rect x="3" y="4" width="8" height="16" rx="1.5"/><rect x="13" y="4" width="8" height="16" rx="1.5" fill="none" stroke-width="2"/>',
  settings: '<circle cx="12" cy="12" r="3.2" fill="none" stroke-width="2.4"/><path d="M12 2v3M12 19v3M2 12h3M19 12h3M4.9 4.9l2.1 2.1M17 17l2.1 2.1M4.9 19.1 7 17M17 7l2.1-2.1" stroke-width="2.4"/>',
  lock: '<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V8a4 4 0 0 1 8 0v3" fill="none" stroke-width="2.4"/>',
  unlock: '<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V8a4 4 0 0 1 7.7-1.5" fill="none" stroke-width="2.4"/>',
  full: '<path d="M3 9V3h6M21 9V3h-6M3 15v6h6M21 15v6h-6" fill="none" stroke-width="2.6"/>',
};

export const NAV = [
  { page: "live", label: "Live", href: "/" },
  { page: "delayed", label: "Delayed", href: "/?mode=delayed" },
  { page: "sessions", label: "Sessions", href: "/ui/sessions.html" },
  { page: "compare", label: "Compare", href: "/ui/compare.html" },
  { page: "settings", label: "Settings", href: "/ui/settings.html" },
];

/**
 * What every page's <head> holds besides its charset, viewport, title, stylesheets and
 * module (those stay in the HTML: they must be there before the first paint). The shell
 * adds these once, so the pages do not each repeat them: the web-app manifest and icons
 * (installing to the home screen), the browser chrome's colour and the full-screen web-app
 * hints. Tags a page already has (same name/rel) are kept.
 */
export const HEAD = [
  ["meta", { name: "theme-color", content: "#101418" }],
  ["meta", { name: "mobile-web-app-capable", content: "yes" }],
  ["meta", { name: "apple-mobile-web-app-capable", content: "yes" }],
  ["meta", { name: "apple-mobile-web-app-status-bar-style", content: "black-translucent" }],
  ["link", { rel: "manifest", href: "/ui/manifest.json" }],
  ["link", { rel: "icon", href: "/ui/icons/icon.svg", type: "image/svg+xml" }],
  ["link", { rel: "apple-touch-icon", href: "/ui/icons/icon-192.png" }],
  ["link", { rel: "stylesheet", href: "/ui/shell.css" }],
];

/** Add the shared head tags (HEAD) the page does not have yet. */
export function addHead(head = document.head) {
  for (const [tag, attrs] of HEAD) {
    const key = tag === "meta" ? `meta[name="${attrs.name}"]`
      : attrs.rel === "stylesheet" ? `link[href="${attrs.href}"]` : `link[rel="${attrs.rel}"]`;
    if (!head.querySelector(key)) head.appendChild(el(tag, attrs));
  }
}

function icon(name) {
  return `<svg viewBox="0 0 24 24" aria-hidden="true" class="shell-icon">${ICONS[name]}</svg>`;
}

function el(tag, attrs = {}, html = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  if (html) e.innerHTML = html;
  return e;
}

/**
 * The plain sentences the banner shows for a health report (most important first).
 * @param {object} h  GET /api/health
 * @returns {{text: string, kind: "error"|"warn"}[]}
 */
export function healthProblems(h) {
  const out = [];
  if (!h || typeof h !== "object") return out;
  if (Array.isArray(h.reasons) && !h.capture) {
    // an unpaired screen gets only general reasons (THREAT_MODEL.md, "Health")
    for (const r of h.reasons) out.push({ kind: "warn", text: `The appliance reports: ${r}.` });
    return out;
  }
  if (h.safe_mode) {
    out.push({ kind: "error", text: "Safe mode: the settings file has an error, so nothing is "
      + `filmed or recorded until it is fixed (${h.safe_mode}).` });
  }
  const cap = h.capture || {};
  if (!h.safe_mode && cap.state && cap.state !== "running") {
    const why = cap.state === "stalled" ? "has stopped sending pictures"
      : cap.state === "starting" || cap.state === "opening" ? "is starting"
        : "is not connected";
    out.push({ kind: cap.state === "starting" ? "warn" : "error",
      text: `The camera ${why}. The live view and recording wait for it.` });
  }
  const ret = h.retention || {};
  if (ret.state === "critical" || ret.can_record === false) {
    out.push({ kind: "error", text: "The disk is full: new recordings are refused until old "
      + "sessions are deleted or unpinned." });
  } else if (ret.state === "low") {
    out.push({ kind: "warn", text: "The disk is nearly full: the oldest sessions are being deleted." });
  }
  const rec = h.recording || {};
  if (rec.last_error && rec.state !== "recording") {
    out.push({ kind: "error", text: `The last recording failed: ${rec.last_error}` });
  }
  if (h.pose && h.pose.enabled !== false && h.pose.error) {
    out.push({ kind: "warn", text: "Skeleton detection has stopped; video still works." });
  }
  return out;
}

class Shell extends EventTarget {
  constructor() {
    super();
    this.page = null;
    this.me = null;
    this.health = null;
    this.online = true;
    this.kiosk = false;
    this.lastTouch = performance.now();
    this._toastTimer = null;
    this._pollTimer = null;
    this._lockTimer = null;
    this.stats = { polls: 0, failures: 0, offlineAt: null, onlineAt: null };
  }

  get role() {
    return this.me ? this.me.role : "anonymous";
  }

  /** True if the caller's role allows what needs `role` (and kiosk hides admin). */
  can(role) {
    if (role === "admin" && this.kiosk) return false;
    return roleAllows(this.role, role);
  }

  init({ page, title = "", subtitle = "" }) {
    this.page = page;
    this._kioskFromUrl();
    const body = document.body;
    body.classList.add("shell");
    addHead();
    const nav = el("nav", { class: "shell-nav", "aria-label": "Pages" });
    const current = page === "replay" ? "sessions" : page;
    for (const item of NAV) {
      const a = el("a", { href: item.href, class: "shell-tab", "data-page": item.page,
        "aria-current": item.page === current ? "page" : false },
      `${icon(item.page)}<span>${item.label}</span>`);
      nav.appendChild(a);
    }
    const bar = el("header", { class: "shell-bar" });
    const zone = el("div", { class: "shell-zone" });
    const heading = el("div", { class: "shell-heading" });
    heading.append(el("h1", { id: "shell-title" }), el("span", { id: "shell-subtitle" }));
    const toast = el("div", { id: "shell-toast", class: "shell-toast", role: "status",
      "aria-live": "polite", hidden: true });
    zone.append(heading, toast);
    const full = el("button", { type: "button", id: "shell-fullscreen", class: "shell-chip",
      "aria-label": "Full screen", hidden: true }, `${icon("full")}<span>Full screen</span>`);
    const admin = el("button", { type: "button", id: "shell-admin", class: "shell-chip",
      "aria-label": "Admin" }, `${icon("lock")}<span>Admin</span>`);
    bar.append(zone, full, admin);
    const banner = el("div", { id: "shell-banner", class: "shell-banner", role: "alert", hidden: true });
    body.prepend(nav, bar, banner);
    this.setTitle(title, subtitle);
    this._pad = new AdminPad(this);
    admin.addEventListener("click", () => this._adminTap());
    full.addEventListener("click", () => this.toggleFullscreen());
    document.addEventListener("fullscreenchange", () => this._showFullscreen());
    for (const ev of ["pointerdown", "keydown"]) {
      document.addEventListener(ev, () => this._touched(), { capture: true, passive: true });
    }
    reachability.addEventListener("offline", () => this._setOnline(false));
    reachability.addEventListener("online", () => this._setOnline(true));
    this._applyKiosk();
    this._applyRole();
    this.refreshMe();
    this._poll();
    return this;
  }

  setTitle(title, subtitle = "") {
    document.getElementById("shell-title").textContent = title || "";
    document.getElementById("shell-subtitle").textContent = subtitle || "";
  }

  // -- toasts ------------------------------------------------------------------------------
  /**
   * Show a short message in the bar's title zone (never over a control).
   * @param {string} text
   * @param {{kind?: "info"|"ok"|"error", action?: {label: string, href?: string,
   *   onClick?: Function, id?: string}, ms?: number}} [opts]
   */
  toast(text, { kind = "info", action = null, ms = TOAST_MS } = {}) {
    const t = document.getElementById("shell-toast");
    t.replaceChildren();
    t.dataset.kind = kind;
    t.appendChild(el("span", { class: "shell-toast-text" })).textContent = text;
    if (action) {
      const a = action.href
        ? el("a", { class: "shell-toast-action", href: action.href, id: action.id || "toast-action" })
        : el("button", { type: "button", class: "shell-toast-action", id: action.id || "toast-action" });
      a.textContent = action.label;
      if (action.onClick) a.addEventListener("click", (e) => { action.onClick(e); this.hideToast(); });
      t.appendChild(a);
    }
    t.hidden = false;
    clearTimeout(this._toastTimer);
    if (ms) this._toastTimer = setTimeout(() => this.hideToast(), action ? Math.max(ms, 10000) : ms);
  }

  hideToast() {
    clearTimeout(this._toastTimer);
    const t = document.getElementById("shell-toast");
    if (t) t.hidden = true;
  }

  // -- health and reachability -------------------------------------------------------------
  async _poll() {
    clearTimeout(this._pollTimer);
    this.stats.polls++;
    try {
      const h = await api("/api/health", { timeout: POLL_TIMEOUT_MS });
      this.health = h;
      this.dispatchEvent(new CustomEvent("health", { detail: h }));
    } catch (err) {
      if (err instanceof ApiError && err.network) {
        this.stats.failures++;
        noteReachable(false, "health");
      }
    }
    this._showBanner();
    this._pollTimer = setTimeout(() => this._poll(), POLL_MS);
  }

  _setOnline(ok) {
    if (ok === this.online) return;
    this.online = ok;
    if (ok) this.stats.onlineAt = Date.now(); else this.stats.offlineAt = Date.now();
    document.body.classList.toggle("offline", !ok);
    this._showBanner();
    this.dispatchEvent(new CustomEvent(ok ? "online" : "offline"));
    if (ok) {
      this.refreshMe();
      this._poll();
    }
  }

  _showBanner() {
    const b = document.getElementById("shell-banner");
    if (!b) return;
    let items;
    if (!this.online || !isReachable()) {
      items = [{ kind: "error", text: "The appliance cannot be reached. Check that it is on; "
        + "this screen reconnects by itself." }];
    } else {
      items = healthProblems(this.health);
    }
    const text = items.map((i) => i.text).join(" ");
    if (b.textContent !== text) b.textContent = text;
    b.dataset.kind = items.some((i) => i.kind === "error") ? "error" : "warn";
    b.dataset.state = !this.online ? "offline" : "online";
    b.hidden = !items.length;
  }

  // -- role and admin ----------------------------------------------------------------------
  async refreshMe() {
    try {
      this.me = await whoAmI();
    } catch (err) {
      if (!(err instanceof ApiError) || !err.network) this.me = null;
    }
    this._applyRole();
    this.dispatchEvent(new CustomEvent("me", { detail: this.me }));
  }

  _applyRole() {
    const role = this.kiosk && this.role === "admin" ? "wall" : this.role;
    document.body.dataset.role = role;
    const b = document.getElementById("shell-admin");
    if (!b) return;
    const admin = this.role === "admin";
    b.hidden = this.kiosk || this.role === "anonymous" || this.role === "token";
    b.innerHTML = `${icon(admin ? "unlock" : "lock")}<span>${admin ? "Lock" : "Admin"}</span>`;
    b.setAttribute("aria-label", admin ? "Lock admin actions" : "Unlock admin actions");
    b.dataset.admin = String(admin);
    clearTimeout(this._lockTimer);
    if (admin && this.me && this.me.via === "cookie") this._armLock();
  }

  _adminTap() {
    if (this.role === "admin") this.lockAdmin();
    else this._pad.open();
  }

  async lockAdmin() {
    try {
      await api("/api/auth/logout", { method: "POST", body: {} });
    } catch (err) {
      this.toast(err.message, { kind: "error" });
    }
    await this.refreshMe();
    this.toast("Admin actions locked.");
  }

  _armLock() {
    clearTimeout(this._lockTimer);
    const left = ADMIN_LOCK_S * 1000 - (performance.now() - this.lastTouch);
    this._lockTimer = setTimeout(() => {
      if (performance.now() - this.lastTouch >= ADMIN_LOCK_S * 1000 - 50) this.lockAdmin();
      else this._armLock();
    }, Math.max(1000, left));
  }

  // -- kiosk ------------------------------------------------------------------------------
  _kioskFromUrl() {
    const p = new URLSearchParams(window.location.search);
    const k = p.get("kiosk");
    try {
      if (k === "1") {
        const home = p.get("home") === "delayed" || p.get("mode") === "delayed" ? "delayed" : "live";
        const idle = Number(p.get("idle")) > 0 ? Number(p.get("idle")) : KIOSK_IDLE_S;
        sessionStorage.setItem("climbd.kiosk", JSON.stringify({ home, idle }));
      } else if (k === "0") {
        sessionStorage.removeItem("climbd.kiosk");
      }
      const saved = JSON.parse(sessionStorage.getItem("climbd.kiosk") || "null");
      this.kiosk = Boolean(saved);
      this.kioskHome = saved ? saved.home : "live";
      this.kioskIdle = saved ? saved.idle : KIOSK_IDLE_S;
    } catch {
      this.kiosk = k === "1";
      this.kioskHome = "live";
      this.kioskIdle = KIOSK_IDLE_S;
    }
  }

  _applyKiosk() {
    document.body.classList.toggle("kiosk", this.kiosk);
    document.getElementById("shell-fullscreen").hidden = !this.kiosk;
    this._showFullscreen();
    if (!this.kiosk) return;
    // the first tap anywhere enters full screen (browsers need a user gesture)
    const enter = () => {
      if (!document.fullscreenElement) this.toggleFullscreen(true);
    };
    document.addEventListener("pointerup", enter, { once: true });
    setInterval(() => this._kioskTick(), 1000);
  }

  /** Where the kiosk returns to when idle. */
  kioskHomeUrl() {
    return this.kioskHome === "delayed" ? "/?mode=delayed" : "/";
  }

  _kioskTick() {
    if (performance.now() - this.lastTouch < this.kioskIdle * 1000) return;
    const atHome = this.page === this.kioskHome;
    if (atHome) return;
    // a page may keep the kiosk where it is (preventDefault on "kiosk-idle")
    const go = this.dispatchEvent(new CustomEvent("kiosk-idle", { cancelable: true }));
    if (go) window.location.assign(this.kioskHomeUrl());
    else this.lastTouch = performance.now();
  }

  async toggleFullscreen(on = !document.fullscreenElement) {
    try {
      if (on) await document.documentElement.requestFullscreen();
      else await document.exitFullscreen();
    } catch { /* not allowed here */ }
    this._showFullscreen();
  }

  _showFullscreen() {
    const b = document.getElementById("shell-fullscreen");
    if (!b) return;
    const on = Boolean(document.fullscreenElement);
    b.querySelector("span").textContent = on ? "Exit full screen" : "Full screen";
    b.setAttribute("aria-label", on ? "Exit full screen" : "Full screen");
    document.body.classList.toggle("is-fullscreen", on);
  }

  _touched() {
    this.lastTouch = performance.now();
  }
}

// -- the admin PIN / password pad ---------------------------------------------------------
class AdminPad {
  constructor(shell) {
    this.shell = shell;
    this.value = "";
    const d = el("dialog", { id: "admin-pad", class: "shell-pad", "aria-labelledby": "admin-pad-title" });
    d.innerHTML = `
      <form method="dialog" class="pad-body">
        <h2 id="admin-pad-title">Admin PIN</h2>
        <p class="pad-help" id="admin-pad-help">Unlocks deleting and settings on this screen for a few minutes.</p>
        <output id="admin-pad-dots" class="pad-dots" aria-live="polite"></output>
        <input id="admin-pad-text" type="password" autocomplete="current-password" maxlength="256"
               aria-label="Admin password" hidden>
        <p id="admin-pad-error" class="pad-error" role="alert"></p>
        <div class="pad-keys" id="admin-pad-keys">
          ${[1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => `<button type="button" data-key="${n}">${n}</button>`).join("")}
          <button type="button" data-key="back" aria-label="Delete one digit">⌫</button>
          <button type="button" data-key="0">0</button>
          <button type="button" data-key="letters" class="pad-alt">ABC</button>
        </div>
        <a id="admin-pad-setup" class="button primary" href="/pair" hidden>Set the admin PIN</a>
        <div class="pad-actions">
          <button type="button" id="admin-pad-cancel">Cancel</button>
          <button type="submit" id="admin-pad-ok" class="primary" value="ok">Unlock</button>
        </div>
      </form>`;
    document.body.appendChild(d);
    this.dialog = d;
    d.querySelector("#admin-pad-keys").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-key]");
      if (!b) return;
      const k = b.dataset.key;
      if (k === "back") this.value = this.value.slice(0, -1);
      else if (k === "letters") { this._letters(); return; }
      else if (this.value.length < 64) this.value += k;
      this._show();
    });
    d.querySelector("#admin-pad-cancel").addEventListener("click", () => d.close());
    d.querySelector("form").addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
  }

  open() {
    this.value = "";
    const text = this.dialog.querySelector("#admin-pad-text");
    text.value = "";
    text.hidden = true;
    this.dialog.querySelector("#admin-pad-keys").hidden = false;
    this.dialog.querySelector("#admin-pad-dots").hidden = false;
    const me = this.shell.me;
    // the first PIN needs the owner's admin code (`climbd pair --admin`): the pairing page
    const setup = Boolean(me && !me.admin_configured);
    this.dialog.querySelector("#admin-pad-title").textContent = setup ? "No admin PIN yet" : "Admin PIN";
    this.dialog.querySelector("#admin-pad-help").textContent = setup
      ? "The owner sets the admin PIN once, with an admin code from the appliance."
      : "Unlocks deleting and settings on this screen for a few minutes.";
    for (const id of ["#admin-pad-keys", "#admin-pad-dots", "#admin-pad-ok"]) {
      this.dialog.querySelector(id).hidden = setup;
    }
    this.dialog.querySelector("#admin-pad-setup").hidden = !setup;
    this._error("");
    this._show();
    if (!this.dialog.open) this.dialog.showModal();
  }

  _letters() {
    const text = this.dialog.querySelector("#admin-pad-text");
    text.hidden = false;
    text.value = this.value;
    this.dialog.querySelector("#admin-pad-keys").hidden = true;
    this.dialog.querySelector("#admin-pad-dots").hidden = true;
    text.focus();
  }

  _show() {
    const n = this.value.length;
    this.dialog.querySelector("#admin-pad-dots").textContent = n ? "●".repeat(n) : "Enter the PIN";
  }

  _error(text) {
    this.dialog.querySelector("#admin-pad-error").textContent = text;
  }

  async submit() {
    const text = this.dialog.querySelector("#admin-pad-text");
    const password = text.hidden ? this.value : text.value;
    if (password.length < 8) {
      this._error("The PIN has at least 8 digits.");
      return;
    }
    const ok = this.dialog.querySelector("#admin-pad-ok");
    ok.disabled = true;
    try {
      await api("/api/auth/admin/login", { method: "POST", body: { password } });
      this.value = "";
      text.value = "";
      this.dialog.close();
      await this.shell.refreshMe();
      this.shell.toast(`Admin actions unlocked for ${Math.round(ADMIN_LOCK_S / 60)} min.`, { kind: "ok" });
    } catch (err) {
      this.value = "";
      this._show();
      this._error(err.status === 401 || err.status === 403 ? "That PIN is not right." : err.message);
    } finally {
      ok.disabled = false;
    }
  }
}

/** The page's shell (one per page). */
export const shell = new Shell();

/** Build the shell around the page once; returns it. */
export function initShell(opts) {
  if (!shell.page) shell.init(opts);
  return shell;
}

window.climbdShell = shell;
