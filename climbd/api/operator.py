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

from climbd.api.keys import DAEMON
from climbd.api.openapi import operation
from climbd.config import config_report
from climbd.sysinfo import CpuMeter, redact_url, temperatures

__all__ = ["add_routes"]

#: The CPU meter of an application (created with it, so the first sample spans its uptime).
CPU: web.AppKey[CpuMeter] = web.AppKey("climbd_cpu_meter", CpuMeter)

#: Config keys whose values are secrets or may embed credentials.
_REDACT_KEYS = {"capture.source"}


async def _devices(request: web.Request) -> list[dict[str, Any]] | None:
    """Paired devices (None when access control is not running)."""
    from climbd.security.middleware import SECURITY

    try:
        state = request.app[SECURITY]
    except KeyError:
        return None
    store = await state.auth_store()
    if store is None:
        return None
    return [d.to_dict() for d in store.devices()]


def _config(daemon: Any) -> list[dict[str, Any]]:
    entries = config_report(daemon.config, getattr(daemon, "config_sources", None))
    for entry in entries:
        if entry["key"] in _REDACT_KEYS and isinstance(entry["value"], str):
            entry["value"] = redact_url(entry["value"])
    return entries


@operation("Operator overview: camera, pose, encoder, CPU, temperature, disk, retention, "
           "viewers, paired devices, the configuration in force and its sources",
           tags=("system",), responses={200: ("System report", None)}, access="admin")
async def system(request: web.Request) -> web.Response:
    """``GET /api/system``.

    ``temperature_c`` is the hottest thermal zone in degrees Celsius, null when the board
    reports none (``temperatures`` lists every zone); ``cpu.percent`` is the machine's busy
    share of all cores since the previous call, ``cpu.process_percent`` the daemon's CPU as
    a percentage of one core.
    """
    daemon = request.app[DAEMON]
    health = daemon.health()
    cap, pose, video = health["capture"], health["pose"], health["video"]
    cfg = daemon.config
    zones = temperatures()
    storage = health.get("storage", {})
    live = health.get("live") if isinstance(health.get("live"), dict) else {}
    report = {
        "status": health["status"],
        "problems": health["problems"],
        "uptime_s": health["uptime_s"],
        "camera": {"source": redact_url(str(cap.get("source", cfg.capture.source))),
                   "state": cap["state"], "fps": cap["fps"], "frames": cap["frames"],
                   "error": cap["error"], "reconnects": cap["reconnects"],
                   "requested": {"width": cfg.capture.width, "height": cfg.capture.height,
                                 "fps": cfg.capture.fps}},
        "pose": {"enabled": pose["enabled"], "fps": pose["fps"], "workers": cfg.pose.workers,
                 "inference_ms_p50": pose.get("inference_ms_p50"), "error": pose["error"]},
        "video": {"encoder": video["encoder"], "bitrate_kbps": cfg.video.bitrate_kbps,
                  "keyframe_interval_s": cfg.video.keyframe_interval_s,
                  "encode_ms_mean": video.get("encode_ms_mean"), "frames": video["frames"],
                  "error": video["error"]},
        "cpu": request.app[CPU].sample(),
        "temperature_c": max(zones.values()) if zones else None,
        "temperatures": zones,
        "disk": {"free_bytes": storage.get("free_bytes"),
                 "total_bytes": storage.get("total_bytes"), "error": storage.get("error")},
        "retention": health.get("retention"),
        "recording": health["recording"],
        "viewers": health.get("viewers", 0),
        "delayed_viewers": sum(line.get("viewers", 0) for line in
                               (live or {}).get("delay", {}).get("lines", [])),
        "devices": await _devices(request),
        "config": _config(daemon),
        "safe_mode": health.get("safe_mode"),
    }
    return web.json_response(report)


def add_routes(app: web.Application) -> None:
    """Register ``GET /api/system``."""
    app[CPU] = CpuMeter()  # a /proc/stat reader, no task or thread
    app.router.add_get("/api/system", system, allow_head=False)
