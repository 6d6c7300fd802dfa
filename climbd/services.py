"""The services the daemon builds, handed to the HTTP layer as one value.

:class:`climbd.daemon.Daemon` (the one composition root) builds every service in
:meth:`~climbd.daemon.Daemon.start` and collects them here; :func:`climbd.api.create_app`
maps each to a typed ``web.AppKey`` (:mod:`climbd.api.keys`) and nothing else. Optional
fields are None in an application built without them (route-table tests); the handlers of
an optional service answer 503 then.

Adding a service: build it in ``Daemon.start`` (and stop it in ``Daemon.stop``), add a field
here, an ``AppKey`` in :mod:`climbd.api.keys` and one line in ``create_app``; register its
health entry with ``Daemon.add_health``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from climbd.config import Config

if TYPE_CHECKING:
    from climbd.attempt_service import AttemptService
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

__all__ = ["Services"]


@dataclass(frozen=True)
class Services:
    """Everything the HTTP layer may talk to.

    Attributes:
        config: the running configuration.
        paths: the state directory layout.
        db: the session catalog. recorder: recording start/stop/save-last/delete.
        health: returns the ``/api/health`` report (``Daemon.health``).
        exports: the export queue and workers. live: the WHEP endpoint (live view).
        ghost: ghost players of the live view. media: replay's low-priority media worker.
        auth: paired devices, admin sessions and API tokens.
        system: the operator page's CPU meter and config provenance.
        attempts: the live attempt detector, its events and hands-free recording.
        shares: share links of exports.
    """

    config: Config
    paths: StateDir | None = None
    db: Database | None = None
    recorder: Recorder | None = None
    health: Callable[[], dict[str, Any]] | None = None
    exports: ExportManager | None = None
    live: WhepEndpoint | None = None
    ghost: GhostService | None = None
    media: MediaWorker | None = None
    auth: AuthStore | None = None
    system: SystemInfo | None = None
    attempts: AttemptService | None = None
    shares: ShareStore | None = None
