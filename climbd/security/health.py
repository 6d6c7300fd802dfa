"""What ``GET /api/health`` tells whom (the health redaction policy).

The full report (every stage, storage paths, the running recording, retention's recent
deletions, camera errors) is for a caller with a role: an API token, a paired device, the
admin (and the local admin socket). Anyone else — the endpoint stays anonymous so load
balancers, uptime checks and the pairing page can use it — gets only :func:`public_health`:
up or degraded, and why in general words. Nothing there names a session, a path, a camera
URL or an error message.

Pure (no aiohttp).
"""

from __future__ import annotations

from typing import Any

__all__ = ["public_health"]


def public_health(report: dict[str, Any]) -> dict[str, Any]:
    """The anonymous view of a full health report (``Daemon.health()``).

    Returns:
        ``{"status": "ok" | "degraded", "reasons": [...]}``; ``reasons`` are fixed phrases
        ("camera not running", "pose estimation failing", "video encoder failing", "low disk
        space", "configuration problem (safe mode)"), never details.
    """
    reasons: list[str] = []
    if report.get("safe_mode"):
        reasons.append("configuration problem (safe mode)")
    capture = report.get("capture")
    if isinstance(capture, dict) and capture.get("state") not in (None, "running"):
        reasons.append("camera not running")
    pose = report.get("pose")
    if isinstance(pose, dict) and pose.get("error"):
        reasons.append("pose estimation failing")
    video = report.get("video")
    if isinstance(video, dict) and video.get("error"):
        reasons.append("video encoder failing")
    retention = report.get("retention")
    if isinstance(retention, dict) and retention.get("state") == "critical":
        reasons.append("low disk space")
    status = "ok" if report.get("status") == "ok" and not reasons else "degraded"
    if status == "degraded" and not reasons:
        reasons.append("a part of the appliance is not working")
    return {"status": status, "reasons": reasons}
