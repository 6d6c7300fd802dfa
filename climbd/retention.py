"""Storage lifecycle: delete old sessions, keep free-space headroom, refuse to record below
a floor.

Three thresholds on the free space of the state directory's filesystem:

- **headroom** = ``retention.headroom_s`` seconds of recording at ``video.bitrate_kbps``
  (default one hour: 2500 kbit/s x 3600 s / 8 = 1.125 GB). Below it, each sweep deletes the
  oldest sessions that are not pinned until the headroom is back (or nothing is left that
  may be deleted).
- **floor** = ``retention.floor_mb`` MiB. Below it a recording is refused before it starts
  (:class:`~climbd.errors.InsufficientStorage`, HTTP 507 with the numbers in the message)
  and the health endpoint's ``retention.state`` is ``critical``.
- **age**: sessions created more than ``retention.max_age_days`` ago are deleted (0 = never).

Never deleted automatically: pinned sessions (``PATCH /api/sessions/{id}`` ``{"pinned":
true}``), the session being recorded, a session being ingested (``processing``) and a
session with a queued or running export. Every deletion is logged at WARNING with the
session id, name, age and reason, and kept in the health report (last 20).

With the archive enabled (``archive.enabled``; :mod:`climbd.archive`), a session that is not
yet archived is never deleted to make room or by age — except below the hard floor
(``retention.floor_mb``), where the oldest are deleted and a WARNING says they were not
archived. ``archive.delete_local_after_days`` deletes the local copies of archived sessions
that old, and the headroom rule takes archived sessions first.

A sweep also removes export directories whose export row is gone (the row cascades away
with its session) and share rows that ended more than a week ago.

:class:`climbd.daemon.Daemon` builds one :class:`Retention`, gives its
:meth:`~Retention.check_can_record` to the recorder as its "may I start?" preflight, registers
:meth:`~Retention.status` as the ``retention`` health entry and runs
:meth:`~Retention.run_forever`: a sweep every ``retention.interval_s`` (and at once when a
recording was refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from climbd.config import RetentionConfig
from climbd.errors import ClimbdError, InsufficientStorage, StorageError
from climbd.statedir import StateDir
from climbd.storage import Database
from climbd.storage.exports import ExportStore, SessionAge
from climbd.storage.shares import ShareStore

__all__ = ["Deletion", "Retention"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_SHARE_KEEP_S = 7 * 86400
_KEEP_DELETIONS = 20


@dataclass(frozen=True)
class Deletion:
    """One automatic deletion (reported in health and the log).

    Attributes:
        session_id, name: the deleted session. reason: 'age' or 'free space'.
        detail: the numbers behind the reason. at: unix time of the deletion.
    """

    session_id: int
    name: str
    reason: str
    detail: str
    at: float


class Retention:
    """Retention rules over one state directory (see the module docstring).

    Args:
        db: the session catalog.
        state_dir: the state directory (its filesystem is the one measured).
        config: the ``[retention]`` settings.
        bitrate_kbps: the recording bitrate (``video.bitrate_kbps``), for the headroom.
        delete: deletes a session and its files (the recorder's ``delete``).
        free_bytes: measures free space (default: ``shutil.disk_usage(state_dir).free``).
        archived_ids: with the archive enabled: returns the ids of archived sessions
            (None: no archive, every session is treated alike).
        delete_local_after_days: ``archive.delete_local_after_days`` (0 = keep).
    """

    def __init__(self, db: Database, state_dir: Path, config: RetentionConfig,
                 bitrate_kbps: float, delete: Callable[[int], Awaitable[Any]],
                 free_bytes: Callable[[], int] | None = None,
                 archived_ids: Callable[[], Awaitable[set[int]]] | None = None,
                 delete_local_after_days: float = 0.0):
        self.db = db
        self.store = ExportStore(db)
        self.shares = ShareStore(db)
        self.state_dir = state_dir
        self.paths = StateDir(state_dir)
        self.config = config
        self.bitrate_kbps = bitrate_kbps
        self._delete = delete
        self._free = free_bytes or self._disk_free
        self._archived_ids = archived_ids
        self.delete_local_after_days = delete_local_after_days
        self.deletions: deque[Deletion] = deque(maxlen=_KEEP_DELETIONS)
        self.deleted_total = 0
        self.last_sweep_at: float | None = None
        self.last_error: str | None = None
        self.stuck = False  # below the headroom with nothing left that may be deleted
        self._wake = asyncio.Event()

    # -- thresholds ------------------------------------------------------------------------
    @property
    def headroom_bytes(self) -> int:
        """Free bytes to keep: ``headroom_s`` seconds at ``bitrate_kbps`` (kbit = 1000 bit)."""
        return int(self.config.headroom_s * self.bitrate_kbps * 1000 / 8)

    @property
    def floor_bytes(self) -> int:
        """Free bytes below which a recording is refused."""
        return int(self.config.floor_mb * MiB)

    def _disk_free(self) -> int:
        return int(shutil.disk_usage(self.state_dir).free)

    def free_bytes(self) -> int:
        """Free bytes on the state directory's filesystem now (for unprivileged writers).

        Raises:
            StorageError: the filesystem cannot be measured.
        """
        try:
            return self._free()
        except OSError as exc:
            raise StorageError(f"cannot measure free space in {self.state_dir}: {exc}") from exc

    # -- the recorder's preflight ----------------------------------------------------------
    def check_can_record(self) -> None:
        """Raise :class:`InsufficientStorage` when free space is below the floor.

        Called by the recorder before a recording starts (synchronously, on the event loop);
        when it refuses, the next sweep is started at once.

        Raises:
            InsufficientStorage: free space below ``floor_mb``, with both numbers.
        """
        if self.floor_bytes <= 0:
            return
        free = self.free_bytes()
        if free < self.floor_bytes:
            self._wake.set()
            raise InsufficientStorage(
                f"not enough free space to record: {free / MiB:.1f} MiB free in "
                f"{self.state_dir}, at least {self.floor_bytes / MiB:.1f} MiB needed "
                "(retention.floor_mb). Delete or unpin old sessions to make room.")

    # -- health ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``retention`` entry of ``/api/health``.

        ``state``: ``ok`` (free >= headroom), ``low`` (below the headroom: old sessions are
        being deleted, or only pinned ones are left), ``critical`` (below the floor:
        recordings are refused).
        """
        try:
            free: int | None = self.free_bytes()
        except StorageError as exc:
            free = None
            self.last_error = str(exc)
        if free is None:
            state = "unknown"
        elif self.floor_bytes > 0 and free < self.floor_bytes:
            state = "critical"
        elif self.headroom_bytes > 0 and free < self.headroom_bytes:
            state = "low"
        else:
            state = "ok"
        messages = {
            "critical": "free space is below the floor: recordings are refused",
            "low": ("free space is below the headroom and only pinned or busy sessions are "
                    "left" if self.stuck else "free space is below the headroom: the oldest "
                    "sessions are being deleted"),
        }
        return {
            "state": state,
            "message": messages.get(state, ""),
            "can_record": state != "critical",
            "free_bytes": free,
            "headroom_bytes": self.headroom_bytes,
            "floor_bytes": self.floor_bytes,
            "max_age_days": self.config.max_age_days,
            "last_sweep_at": self.last_sweep_at,
            "deleted_total": self.deleted_total,
            "recent_deletions": [asdict(d) for d in self.deletions],
            "error": self.last_error,
        }

    # -- sweeping --------------------------------------------------------------------------
    @staticmethod
    def _deletable(s: SessionAge) -> bool:
        return not s.pinned and s.status not in ("recording", "processing") \
            and s.active_exports == 0

    async def _remove(self, s: SessionAge, reason: str, detail: str) -> Deletion | None:
        try:
            await self._delete(s.id)
        except ClimbdError as exc:  # SessionNotFound (deleted meanwhile), AlreadyRecording
            log.info("retention: session %d not deleted: %s", s.id, exc)
            return None
        d = Deletion(s.id, s.name, reason, detail, time.time())
        self.deletions.append(d)
        self.deleted_total += 1
        log.warning("retention: deleted session %d %r (%s: %s)", s.id, s.name, reason, detail,
                    extra={"session_id": s.id})
        return d

    async def sweep(self, now: float | None = None) -> list[Deletion]:
        """Apply the age rule, then the headroom rule; clean orphaned export files.

        Returns the deletions made by this sweep (oldest session first).

        Raises:
            StorageError: the catalog cannot be read (deletion failures are logged).
        """
        now = time.time() if now is None else now
        sessions = await self.store.sessions_by_age()
        done: list[Deletion] = []
        archive = self._archived_ids is not None
        archived = await self._archived_ids() if self._archived_ids is not None else set()

        def safe(s: SessionAge) -> bool:  # may go without losing the only copy
            return not archive or s.id in archived

        if archive and self.delete_local_after_days > 0:
            limit = now - self.delete_local_after_days * 86400
            for s in sessions:
                if s.id in archived and s.created_at < limit and self._deletable(s):
                    d = await self._remove(s, "archived", "the bucket has it; archive."
                                           f"delete_local_after_days = "
                                           f"{self.delete_local_after_days:g}")
                    if d is not None:
                        done.append(d)
        if self.config.max_age_days > 0:
            limit = now - self.config.max_age_days * 86400
            for s in sessions:
                if any(d.session_id == s.id for d in done):
                    continue
                if s.created_at < limit and self._deletable(s) and safe(s):
                    age_d = (now - s.created_at) / 86400
                    d = await self._remove(s, "age", f"{age_d:.1f} days old, retention."
                                           f"max_age_days = {self.config.max_age_days:g}")
                    if d is not None:
                        done.append(d)
        gone = {d.session_id for d in done}
        self.stuck = False
        if self.headroom_bytes > 0:
            # archived (safe) sessions first, oldest first; unarchived ones only below the
            # hard floor, while the archive is enabled
            order = [s for s in sessions if safe(s)] + [s for s in sessions if not safe(s)]
            for s in order:
                free = self.free_bytes()
                if free >= self.headroom_bytes:
                    break
                if s.id in gone or not self._deletable(s):
                    continue
                if not safe(s):
                    if not (self.floor_bytes > 0 and free < self.floor_bytes):
                        continue
                    log.warning("retention: %.1f MiB free is below the %.1f MiB floor: "
                                "deleting session %d although it is NOT archived yet",
                                free / MiB, self.floor_bytes / MiB, s.id)
                d = await self._remove(s, "free space", f"{free / MiB:.1f} MiB free, headroom "
                                       f"{self.headroom_bytes / MiB:.1f} MiB"
                                       + ("" if safe(s) else "; below the floor, not archived"))
                if d is not None:
                    done.append(d)
                    gone.add(s.id)
            else:
                if self.free_bytes() < self.headroom_bytes:
                    self.stuck = True
                    log.warning("retention: %.1f MiB free, below the %.1f MiB headroom, and "
                                "every remaining session is pinned or busy",
                                self.free_bytes() / MiB, self.headroom_bytes / MiB)
        await self._clean_exports(now)
        self.last_sweep_at = now
        self.last_error = None
        return done

    async def _clean_exports(self, now: float) -> None:
        root = self.paths.exports
        if root.is_dir():
            ids = await self.store.ids()
            for d in root.iterdir():
                if d.is_dir() and d.name.isdigit() and int(d.name) not in ids:
                    await asyncio.to_thread(shutil.rmtree, d, True)
                    log.info("retention: removed files of deleted export %s", d.name)
        await self.shares.purge_shares(now - _SHARE_KEEP_S)

    async def run_forever(self) -> None:
        """Sweep now, then every ``interval_s`` or when woken (a refused recording)."""
        while True:
            try:
                await self.sweep()
            except (ClimbdError, OSError) as exc:
                self.last_error = str(exc)
                log.error("retention sweep failed: %s", exc)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.interval_s)

