"""Typed application state keys (aiohttp ``AppKey``): one per service of
:class:`climbd.services.Services`, set by :func:`climbd.api.create_app`.

Handlers read ``request.app[DB]`` etc.; optional services (exports, live view, ghost, media
worker, auth store) are read with ``request.app.get(KEY)`` and answer 503 when absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from climbd.attempt_service import AttemptService
    from climbd.config import Config
    from climbd.export.jobs import ExportManager
    from climbd.ghost.live import GhostService
    from climbd.recording import Recorder
    from climbd.replay.media import MediaWorker
    from climbd.security.store import AuthStore
    from climbd.statedir import StateDir
    from climbd.storage import Database
    from climbd.storage.shares import ShareStore
    from climbd.streaming import WhepEndpoint
    from climbd.sysinfo import SystemInfo

__all__ = ["ATTEMPTS", "AUTH_STORE", "CONFIG", "DB", "EXPORTS", "GHOST", "HEALTH", "LIVE",
           "MEDIA", "PATHS", "RECORDER", "SHARES", "SYSTEM"]

#: The running configuration.
CONFIG: web.AppKey[Config] = web.AppKey("climbd_config")
#: The state directory layout.
PATHS: web.AppKey[StateDir] = web.AppKey("climbd_paths")
#: The session catalog.
DB: web.AppKey[Database] = web.AppKey("climbd_db")
#: The recorder.
RECORDER: web.AppKey[Recorder] = web.AppKey("climbd_recorder")
#: Returns the ``/api/health`` report.
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("climbd_health")
#: The export manager (optional).
EXPORTS: web.AppKey[ExportManager] = web.AppKey("climbd_exports")
#: The WHEP endpoint of the live view (optional).
LIVE: web.AppKey[WhepEndpoint] = web.AppKey("climbd_live")
#: The ghost players (optional).
GHOST: web.AppKey[GhostService] = web.AppKey("climbd_ghost")
#: Replay's media worker (optional).
MEDIA: web.AppKey[MediaWorker] = web.AppKey("climbd_media")
#: Live attempt detection, events and hands-free recording (optional).
ATTEMPTS: web.AppKey[AttemptService] = web.AppKey("climbd_attempts")
#: The credential store (optional: without it nobody is paired).
AUTH_STORE: web.AppKey[AuthStore] = web.AppKey("climbd_auth_store")
#: Share links of exports (optional).
SHARES: web.AppKey[ShareStore] = web.AppKey("climbd_shares")
#: CPU meter and config provenance for the operator page (optional).
SYSTEM: web.AppKey[SystemInfo] = web.AppKey("climbd_system")
