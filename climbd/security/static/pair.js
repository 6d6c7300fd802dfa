// Pairing and admin login page (served at /pair, no inline script: CSP script-src 'self').
// Every state-changing request sends the CSRF token of GET /api/auth/me as X-CSRF-Token.

const $ = (id) => document.getElementById(id);
let me = null;

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (me && me.csrf_token) headers[me.csrf_header] = me.csrf_token;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined,
                                  credentials: "same-origin" });
  let data = null;
  try { data = await res.json(); } catch { /* empty */ }
  if (!res.ok) {
    const wait = res.headers.get("Retry-After");
    const msg = (data && data.message) || res.statusText;
    throw new Error(wait ? `${msg} (try again in ${wait} s)` : msg);
  }
  return data;
}

function show(id, visible) { $(id).hidden = !visible; }

async function refresh() {
  me = await call("GET", "/api/auth/me");
  const who = me.role === "anonymous" ? "This device is not paired."
    : me.role === "admin" ? "You are the admin" + (me.device ? ` on ${me.device.name}.` : ".")
    : me.role === "wall" ? `Paired as ${me.device.name}.` : "API token.";
  $("status").textContent = who;
  show("pair-section", me.role === "anonymous" || !me.device);
  show("code-section", me.role === "wall" || me.role === "admin");
  show("admin-section", true);
  const setup = !me.admin_configured;
  $("admin-title").textContent = setup ? "Set the admin password" : "Admin";
  $("admin-submit").textContent = setup ? "Set password" : "Log in";
  $("admin-password").autocomplete = setup ? "new-password" : "current-password";
  show("admin-form", me.role !== "admin" || setup);
  show("logout", me.role === "admin" && me.via === "cookie");
}

$("pair-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await call("POST", "/api/auth/pair", { code: $("pair-code").value, name: $("pair-name").value });
    location.assign("/");
  } catch (err) { $("status").textContent = err.message; }
});

$("admin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const password = $("admin-password").value;
  const code = $("admin-code").value.trim();
  try {
    if (!me.admin_configured || code) {
      await call("POST", "/api/auth/admin/setup", code ? { password, code } : { password });
    } else {
      await call("POST", "/api/auth/admin/login", { password });
    }
    $("admin-password").value = "";
    await refresh();
  } catch (err) { $("status").textContent = err.message; }
});

$("make-code").addEventListener("click", async () => {
  try {
    const c = await call("POST", "/api/auth/pairing-codes");
    const minutes = Math.round(c.ttl_s / 60);
    $("new-code").textContent = `${c.code}  (valid ${minutes} min)`;
  } catch (err) { $("status").textContent = err.message; }
});

$("logout").addEventListener("click", async () => {
  try { await call("POST", "/api/auth/logout"); await refresh(); }
  catch (err) { $("status").textContent = err.message; }
});

refresh().catch((err) => { $("status").textContent = err.message; });
