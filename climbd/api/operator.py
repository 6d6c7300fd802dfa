"""The operator page's data: ``GET /api/system`` (admin only).

One JSON object with what a gym owner checks when something is off: the camera (source with
credentials redacted, state, fps), pose (fps, workers), the encoder, CPU and temperature
(:mod:`climbd.sysinfo`), disk and retention, live viewers, paired devices, and the
configuration in force with where each value came from (default / file / cli,
:func:`climbd.config.config_report`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from climbd.api import keys
from climbd.api.openapi import operation
from climbd.config import config_report
from climbd.device import resolve_workers
from climbd.redaction import redact_url
from climbd.sysinfo import temperatures

__all__ = ["add_routes"]

#: Config keys whose values may embed credentials.
_REDACT_KEYS = {"capture.source"}
#: secrets never shown, only whether they are set
_SECRET_KEYS = {"archive.secret_access_key"}


def _config(app: web.Application) -> list[dict[str, Any]]:
    system = app.get(keys.SYSTEM)
    entries = config_report(app[keys.CONFIG], system.config_sources if system else None)
    for entry in entries:
        if entry["key"] in _REDACT_KEYS and isinstance(entry["value"], str):
            entry["value"] = redact_url(entry["value"])
        if entry["key"] in _SECRET_KEYS and entry["value"]:
            entry["value"] = "***"
    return entries


@operation("Operator overview: camera, pose, encoder, CPU, temperature, disk, retention, "
           "viewers, paired devices, the configuration in force and its sources",
           tags=("system",), responses={200: ("System report", None)}, access="admin")
async def system(request: web.Request) -> web.Response:
    """``GET /api/system``.

    ``temperature_c`` is the hottest thermal zone in degrees Celsius, null when the board
    reports none (``temperatures`` lists every zone); ``cpu.percent`` is the machine's busy
    share of all cores since the previous call, ``cpu.process_percent`` the daemon's CPU as
    a percentage of one core; ``devices`` the paired wall tablets (null without a
    credential store).
    """
    app = request.app
    health = app[keys.HEALTH]()
    cap, pose, video = health["capture"], health["pose"], health["video"]
    cfg = app[keys.CONFIG]
    zones = temperatures()
    storage = health.get("storage", {})
    live = health.get("live") if isinstance(health.get("live"), dict) else {}
    system_info = app.get(keys.SYSTEM)
    auth = app.get(keys.AUTH_STORE)
    report = {
        "status": health["status"],
        "problems": health["problems"],
        "uptime_s": health["uptime_s"],
        "camera": {"source": redact_url(str(cap.get("source", cfg.capture.source))),
                   "state": cap["state"], "fps": cap["fps"], "frames": cap["frames"],
                   "error": cap["error"], "reconnects": cap["reconnects"],
                   "requested": {"width": cfg.capture.width, "height": cfg.capture.height,
                                 "fps": cfg.capture.fps}},
        "pose": {"enabled": pose["enabled"], "fps": pose["fps"],
                 "workers": resolve_workers(cfg.pose.workers),
                 "inference_ms_p50": pose.get("inference_ms_p50"), "error": pose["error"]},
        "video": {"encoder": video["encoder"], "bitrate_kbps": cfg.video.bitrate_kbps,
                  "keyframe_interval_s": cfg.video.keyframe_interval_s,
                  "encode_ms_mean": video.get("encode_ms_mean"), "frames": video["frames"],
                  "error": video["error"]},
        "cpu": system_info.cpu.sample() if system_info else None,
        "temperature_c": max(zones.values()) if zones else None,
        "temperatures": zones,
        "disk": {"free_bytes": storage.get("free_bytes"),
                 "total_bytes": storage.get("total_bytes"), "error": storage.get("error")},
        "retention": health.get("retention"),
        "mqtt": health.get("mqtt"),  # {"state": "disabled"} unless [mqtt] is on
        "archive": health.get("archive"),  # {"state": "disabled"} unless [archive] is on
        "recording": health["recording"],
        "viewers": health.get("viewers", 0),
        "delayed_viewers": sum(line.get("viewers", 0) for line in
                               (live or {}).get("delay", {}).get("lines", [])),
        "devices": None if auth is None else [d.to_dict() for d in auth.devices()],
        "config": _config(app),
        "safe_mode": health.get("safe_mode"),
    }
    return web.json_response(report)


def add_routes(app: web.Application) -> None:
    """Register ``GET /api/system``."""
    app.router.add_get("/api/system", system, allow_head=False)
