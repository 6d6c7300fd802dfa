// Pairing page (served at /pair, no inline script: CSP script-src 'self'), inside the app
// shell. The code is typed on big keys (8 digits, shown as 1234-5678; codes printed by
// `climbd pair` on the appliance have 12: 1234-5678-9012); every
// state-changing request goes through /ui/js/api.js (CSRF header from GET /api/auth/me).

import { api, whoAmI } from "/ui/js/api.js";
import { initShell } from "/ui/js/shell.js";

const $ = (id) => document.getElementById(id);
const shell = initShell({ page: "settings", title: "Pair this screen" });
const DIGITS = 8;       // codes from a paired screen or the journal
const CLI_DIGITS = 12;  // codes from `climbd pair` on the appliance
let me = null;
let code = "";

function show(id, visible) { $(id).hidden = !visible; }

function showCode() {
  const padded = code.padEnd(code.length > DIGITS ? CLI_DIGITS : DIGITS, "–");
  $("code-display").textContent = padded.match(/.{1,4}/g).join("-");
  $("pair-code").value = code;
  $("pair-submit").disabled = code.length !== DIGITS && code.length !== CLI_DIGITS;
}

async function refresh() {
  me = await whoAmI();
  const who = me.role === "anonymous" ? "This screen is not paired yet."
    : me.role === "admin" ? "Admin unlocked" + (me.device ? ` on “${me.device.name}”.` : ".")
      : me.role === "wall" ? `This screen is paired as “${me.device.name}”.` : "Connected with an API token.";
  $("status").textContent = who;
  show("pair-section", me.role === "anonymous" || !me.device);
  show("code-section", me.role === "wall" || me.role === "admin");
  show("admin-section", me.role !== "anonymous" || !me.admin_configured);
  const setup = !me.admin_configured;
  $("admin-title").textContent = setup ? "Choose the admin PIN" : "Reset the admin PIN";
  $("admin-submit").textContent = setup ? "Set PIN" : "Reset PIN";
  show("admin-code-label", true);  // setting the PIN always needs an admin code
  show("admin-form", me.role !== "admin" || setup);
  show("logout", me.role === "admin" && me.via === "cookie");
}

$("pair-keys").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-key]");
  if (!b) return;
  const k = b.dataset.key;
  if (k === "back") code = code.slice(0, -1);
  else if (k === "clear") code = "";
  else if (code.length < CLI_DIGITS) code += k;
  showCode();
});
document.addEventListener("keydown", (e) => {
  if (e.target && e.target.tagName === "INPUT") return;
  if (/^[0-9]$/.test(e.key) && code.length < CLI_DIGITS) { code += e.key; showCode(); }
  else if (e.key === "Backspace") { code = code.slice(0, -1); showCode(); }
});

$("pair-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("/api/auth/pair", { method: "POST", body: { code, name: $("pair-name").value } });
    $("status").textContent = "Paired. Opening the live view…";
    location.assign("/");
  } catch (err) {
    code = "";
    showCode();
    $("status").textContent = err.status === 403 ? "That code is wrong or has expired. Ask for a new one."
      : err.status === 429 ? `Too many tries: ${err.message}` : err.message;
  }
});

$("admin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const password = $("admin-password").value;
  const reset = $("admin-code").value.trim();
  try {
    await api("/api/auth/admin/setup", { method: "POST",
      body: reset ? { password, code: reset } : { password } });
    $("admin-password").value = "";
    await refresh();
    await shell.refreshMe();
  } catch (err) { $("status").textContent = err.message; }
});

$("make-code").addEventListener("click", async () => {
  try {
    const c = await api("/api/auth/pairing-codes", { method: "POST", body: {} });
    $("new-code").textContent = `${c.code}  (valid ${Math.round(c.ttl_s / 60)} min)`;
  } catch (err) { $("status").textContent = err.message; }
});

$("logout").addEventListener("click", async () => {
  await shell.lockAdmin();
  await refresh();
});

showCode();
refresh().catch((err) => { $("status").textContent = err.message; });
