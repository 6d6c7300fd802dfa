// /ui/delayed.html -> the live page in delayed mode, kiosk on unless ?kiosk=0.
const p = new URLSearchParams(window.location.search);
p.set("mode", "delayed");
if (!p.has("kiosk")) p.set("kiosk", "1");
window.location.replace(`/?${p.toString()}`);
