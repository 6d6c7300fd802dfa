// The settings page (/ui/settings.html): this screen (paired? admin unlocked?), pairing
// another screen, kiosk links, and for the admin the operator view of the appliance
// (GET /api/system: camera, fps, pose fps, encoder, CPU, temperature, disk and retention,
// viewers, paired devices with Unpair, the config in force and where each value came from).
// Without /api/system (an older daemon) it says so and shows what /api/health knows.

import { api } from "./api.js";
import { formatDate } from "./replay-common.js";
import { formatBytes } from "./export-share.js";
import { initShell } from "./shell.js";

const $ = (id) => document.getElementById(id);
const shell = initShell({ page: "settings", title: "Settings" });
const REFRESH_MS = 3000;
const state = { system: null, timer: null, stats: { loads: 0 } };

function showWho() {
  const me = shell.me;
  const role = me ? me.role : "anonymous";
  const name = me && me.device ? me.device.name : "";
  $("who").textContent = role === "admin" ? `Admin unlocked${name ? ` on “${name}”` : ""}.`
    : role === "wall" ? `Paired as “${name || "wall screen"}”.`
      : role === "token" ? "Connected with an API token."
        : "This screen is not paired yet.";
  $("pair-here").hidden = role !== "anonymous";
  $("unlock").hidden = shell.kiosk || !(role === "wall");
  $("lock").hidden = role !== "admin";
  $("unlock").textContent = me && !me.admin_configured ? "Set the admin PIN" : "Unlock admin";
}

function fact(label, value, note = "", bad = false, wide = false) {
  const div = document.createElement("div");
  div.classList.toggle("bad", Boolean(bad));
  div.classList.toggle("wide", Boolean(wide)); // a long note (a path, an error): a whole row on phones
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (note) {
    const small = document.createElement("small");
    small.textContent = note;
    dd.appendChild(small);
  }
  div.append(dt, dd);
  return div;
}

const num = (x, d = 1) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–");

function showFacts(sys, health) {
  const h = health || shell.health || {};
  const cam = sys ? sys.camera || {} : h.capture || {};
  const pose = sys ? sys.pose || {} : h.pose || {};
  const vid = sys ? sys.video || {} : h.video || {};
  const disk = sys ? sys.disk || {} : h.storage || {};
  const ret = sys ? sys.retention || h.retention || {} : h.retention || {};
  const items = [
    fact("Camera", cam.state || "–", cam.source ? String(cam.source) : "", cam.state && cam.state !== "running", true),
    fact("Camera fps", num(cam.fps)),
    fact("Skeleton fps", num(pose.fps), pose.workers ? `${pose.workers} worker${pose.workers === 1 ? "" : "s"}` : ""),
    fact("Encoder", vid.encoder || "–", typeof vid.encode_ms_mean === "number" ? `${num(vid.encode_ms_mean)} ms a frame` : ""),
  ];
  if (sys) {
    const cpu = sys.cpu || {};
    items.push(fact("CPU", typeof cpu.percent === "number" ? `${num(cpu.percent, 0)} %` : "–",
      typeof cpu.load1 === "number" ? `load ${num(cpu.load1, 2)}` : ""));
    items.push(fact("Temperature", typeof sys.temperature_c === "number" ? `${num(sys.temperature_c)} °C`
      : "not reported", "", typeof sys.temperature_c === "number" && sys.temperature_c > 75));
    items.push(fact("Viewers", String(sys.viewers ?? "–")));
  }
  items.push(fact("Free disk", typeof disk.free_bytes === "number" ? formatBytes(disk.free_bytes) : "–",
    typeof disk.total_bytes === "number" ? `of ${formatBytes(disk.total_bytes)}` : "",
    ret.state === "critical" || ret.state === "low"));
  items.push(fact("Retention", ret.state || "–",
    [ret.max_age_days ? `keeps ${ret.max_age_days} days` : "", ret.message || ""].filter(Boolean).join(" · ")));
  const mq = (sys && sys.mqtt) || h.mqtt || {};
  if (mq.state && mq.state !== "disabled") {
    items.push(fact("MQTT", mq.state, [mq.broker, mq.queued ? `${mq.queued} queued` : "",
      mq.dropped ? `${mq.dropped} dropped` : "", mq.state !== "connected" ? mq.last_error || "" : ""]
      .filter(Boolean).join(" · "), mq.state !== "connected", true));
  }
  const ar = (sys && sys.archive) || h.archive || {};
  if (ar.state && ar.state !== "disabled") {
    items.push(fact("Archive", ar.state, [ar.bucket, `${ar.pending ?? 0} waiting`,
      `${ar.archived ?? 0} archived`, ar.last_error || ""].filter(Boolean).join(" · "),
      ar.state === "failing", true));
  }
  $("facts").replaceChildren(...items);
}

function showDevices(devices) {
  const ul = $("devices");
  if (!devices) { ul.replaceChildren(); return; }
  ul.replaceChildren(...devices.map((d) => {
    const li = document.createElement("li");
    li.dataset.id = String(d.id);
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = d.name || `screen ${d.id}`;
    const small = document.createElement("small");
    small.textContent = `${d.current ? "this screen · " : ""}last seen ${formatDate(d.last_seen_at)}`;
    who.appendChild(small);
    const b = document.createElement("button");
    b.type = "button";
    b.className = "danger";
    b.textContent = "Unpair";
    b.addEventListener("click", () => unpair(d, b));
    li.append(who, b);
    return li;
  }));
}

async function unpair(d, button) {
  if (button.dataset.confirm !== "1") {
    button.dataset.confirm = "1";
    button.textContent = "Tap again to unpair";
    setTimeout(() => { button.dataset.confirm = ""; button.textContent = "Unpair"; }, 4000);
    return;
  }
  try {
    await api(`/api/auth/devices/${d.id}`, { method: "DELETE" });
    shell.toast(`“${d.name}” is no longer paired.`, { kind: "ok" });
    load();
  } catch (err) {
    shell.toast(err.message, { kind: "error" });
  }
}

const SOURCES = { default: "default", file: "from the settings file", cli: "from the command line" };

/** `a_long.key_name` with break opportunities after "_" and "." (never inside a word). */
function keyCell(key) {
  const td = document.createElement("td");
  td.className = "key";
  key.split(/(?<=[._])/).forEach((part, i) => {
    if (i) td.appendChild(document.createElement("wbr"));
    td.appendChild(document.createTextNode(part));
  });
  return td;
}

/**
 * The config in force (GET /api/system `config`: [{key, value, source}]), one collapsible
 * section per top-level table ("capture", "mqtt", ...); a section holding a value from the
 * file or the command line is open, and such rows are marked.
 */
function showConfig(rows) {
  const groups = new Map();
  for (const r of rows || []) {
    const dot = r.key.indexOf(".");
    const section = dot > 0 ? r.key.slice(0, dot) : r.key;
    if (!groups.has(section)) groups.set(section, []);
    groups.get(section).push({ ...r, name: dot > 0 ? r.key.slice(dot + 1) : r.key });
  }
  const openBefore = new Set([...document.querySelectorAll("#config details[open]")]
    .map((d) => d.dataset.section));
  $("config").replaceChildren(...[...groups].map(([section, items]) => {
    const set = items.filter((r) => r.source !== "default").length;
    const details = document.createElement("details");
    details.className = "cfg";
    details.dataset.section = section;
    details.open = set > 0 || openBefore.has(section);
    const summary = document.createElement("summary");
    const name = document.createElement("span");
    name.className = "cfg-name";
    name.textContent = section;
    const note = document.createElement("small");
    note.textContent = `${items.length} setting${items.length === 1 ? "" : "s"}`
      + (set ? ` · ${set} not default` : "");
    summary.append(name, note);
    const table = document.createElement("table");
    const body = document.createElement("tbody");
    body.append(...items.map((r) => {
      const tr = document.createElement("tr");
      tr.className = `src-${r.source}`;
      tr.title = r.key;
      const k = keyCell(r.name);
      const small = document.createElement("small");
      small.textContent = SOURCES[r.source] || r.source;
      k.appendChild(small);
      const v = document.createElement("td");
      const value = typeof r.value === "string" ? r.value : JSON.stringify(r.value);
      v.textContent = value === "" ? "(empty)" : value;
      if (value === "") v.className = "muted";
      tr.append(k, v);
      return tr;
    }));
    table.appendChild(body);
    details.append(summary, table);
    return details;
  }));
}

async function load() {
  clearTimeout(state.timer);
  showWho();
  if (shell.can("admin")) {
    state.stats.loads++;
    try {
      state.system = await api("/api/system");
      $("system-note").hidden = true;
      showFacts(state.system);
      showDevices(state.system.devices);
      showConfig(state.system.config);
      $("config-card").hidden = false;
    } catch (err) {
      state.system = null;
      $("system-note").hidden = false;
      $("system-note").textContent = err.status === 404
        ? "This appliance does not report CPU, temperature and settings yet; showing its health."
        : err.message;
      showFacts(null);
      $("config-card").hidden = true;
      try {
        const d = await api("/api/auth/devices");
        showDevices(d.items);
      } catch { showDevices(null); }
    }
  }
  state.timer = setTimeout(load, REFRESH_MS);
}

$("unlock").addEventListener("click", () => document.getElementById("shell-admin").click());
$("lock").addEventListener("click", () => shell.lockAdmin());
$("make-code").addEventListener("click", async () => {
  try {
    const c = await api("/api/auth/pairing-codes", { method: "POST", body: {} });
    const el = $("new-code");
    el.replaceChildren(c.code, Object.assign(document.createElement("small"),
      { textContent: `Type it on the new screen at /pair within ${Math.round(c.ttl_s / 60)} minutes.` }));
    el.hidden = false;
  } catch (err) {
    shell.toast(err.message, { kind: "error" });
  }
});
shell.addEventListener("me", load);
shell.addEventListener("online", load);

window.settingsPage = { state, load };
load();
