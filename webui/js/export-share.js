// Export and share on the tablet: the export dialog of the replay page and the full-screen QR.
//
// - Kinds (POST /api/sessions/{id}/exports {kind, speed}): "overlay" (skeleton burned in,
//   speed 1, 0.5 or 0.25 = slowed), "video" (as recorded, stream copy), "csv", "json".
// - Progress: GET /api/exports/{id} every POLL_MS (status queued/running/done/failed,
//   progress 0..1, queue_position) until done or failed.
// - Share: POST /api/exports/{id}/share -> {url, qr_svg_url}; the QR image is loaded from
//   this page's own origin (the path of qr_svg_url), because the link itself points at the
//   appliance's LAN address, which this screen may reach by another name.

import { api } from "./api.js";

const POLL_MS = 500;
const $ = (id) => document.getElementById(id);

const KIND_WORDS = {
  overlay: "video with the skeleton", video: "video as recorded", csv: "pose CSV", json: "pose JSON",
};

/** Words for one export's state (what the progress line says). */
export function exportStatusText(e) {
  const what = KIND_WORDS[e.kind] || e.kind;
  const slowed = e.kind === "overlay" && e.speed && e.speed < 1 ? ` slowed ${e.speed}×` : "";
  switch (e.status) {
    case "queued":
      return `Waiting to make the ${what}${slowed}`
        + (e.queue_position ? ` (number ${e.queue_position} in the queue)…` : "…");
    case "running":
      return `Making the ${what}${slowed}: ${Math.round((e.progress || 0) * 100)} %`;
    case "done":
      return `Ready: ${what}${slowed}, ${formatBytes(e.bytes)}.`;
    case "failed":
      return `The export failed: ${e.error || "unknown error"}`;
    case "cancelled":
      return "The export was cancelled.";
    default:
      return e.status;
  }
}

/** 1234567 -> "1.2 MB". */
export function formatBytes(n) {
  n = Number(n) || 0;
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(0)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

export class ExportDialog {
  /**
   * @param {{toast: Function}} shell
   * @param {() => object|null} session  the session being replayed (API record)
   */
  constructor(shell, session) {
    this.shell = shell;
    this.session = session;
    this.current = null; // the export in the dialog
    this.share = null;
    this._timer = null;
    this.stats = { polls: 0, created: 0 };
    for (const b of document.querySelectorAll("#export-dialog [data-kind]")) {
      b.addEventListener("click", () => this.start(b.dataset.kind, Number(b.dataset.speed)));
    }
    $("export-close").addEventListener("click", () => this.close());
    $("export-share").addEventListener("click", () => this.makeShare());
    $("qr-close").addEventListener("click", () => $("qr-dialog").close());
  }

  open() {
    const s = this.session();
    if (!s) return;
    $("export-title").textContent = `Export “${s.name}”`;
    const noVideo = !s.video_url;
    for (const b of document.querySelectorAll("#export-dialog [data-kind]")) {
      b.disabled = noVideo && (b.dataset.kind === "video" || b.dataset.kind === "overlay");
      b.setAttribute("aria-pressed", "false");
    }
    if (!this.current) this._show(null);
    if (!$("export-dialog").open) $("export-dialog").showModal();
  }

  close() {
    clearTimeout(this._timer);
    $("export-dialog").close();
  }

  async start(kind, speed) {
    const s = this.session();
    if (!s) return;
    clearTimeout(this._timer);
    for (const b of document.querySelectorAll("#export-dialog [data-kind]")) {
      const on = b.dataset.kind === kind && Number(b.dataset.speed) === speed;
      b.setAttribute("aria-pressed", String(on));
    }
    const body = { kind };
    if (kind === "overlay" && speed && speed !== 1) body.speed = speed;
    this._show({ kind, speed, status: "queued" });
    try {
      this.current = await api(`/api/sessions/${s.id}/exports`, { method: "POST", body });
      this.stats.created++;
      this._show(this.current);
      this._poll();
    } catch (err) {
      this.current = null;
      this._show(null);
      $("export-progress").hidden = false;
      $("export-status").textContent = err.message;
    }
  }

  async _poll() {
    const e = this.current;
    if (!e || e.status === "done" || e.status === "failed" || e.status === "cancelled") return;
    this._timer = setTimeout(async () => {
      this.stats.polls++;
      try {
        this.current = await api(`/api/exports/${e.id}`);
        this._show(this.current);
      } catch (err) {
        if (!err.network) {
          $("export-status").textContent = err.message;
          return;
        }
      }
      this._poll();
    }, POLL_MS);
  }

  _show(e) {
    $("export-progress").hidden = !e;
    $("export-download").hidden = !(e && e.status === "done" && e.file_url);
    $("export-share").hidden = !(e && e.status === "done");
    if (!e) return;
    const bar = $("export-bar");
    bar.value = e.status === "done" ? 1 : e.progress || 0;
    $("export-status").textContent = exportStatusText(e);
    if (e.status === "done" && e.file_url) $("export-download").href = e.file_url;
  }

  async makeShare() {
    const e = this.current;
    if (!e) return;
    const button = $("export-share");
    button.disabled = true;
    try {
      this.share = await api(`/api/exports/${e.id}/share`, { method: "POST", body: {} });
      showQr(this.share);
    } catch (err) {
      $("export-status").textContent = err.message;
    } finally {
      button.disabled = false;
    }
  }
}

/** Show a share link full screen as a QR code (the server renders the SVG). */
export function showQr(share) {
  const img = $("qr-image");
  const qr = new URL(share.qr_svg_url, window.location.href);
  img.src = qr.pathname; // same origin as this page
  $("qr-url").textContent = share.url;
  const mins = Math.round((share.expires_at - Date.now() / 1000) / 60);
  $("qr-expiry").textContent = mins > 90 ? `The link works for ${Math.round(mins / 60)} hours.`
    : `The link works for ${mins} minutes.`;
  const d = $("qr-dialog");
  if (!d.open) d.showModal();
}
