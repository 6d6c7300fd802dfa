"""Exports and the session-lifecycle queries, on the session catalog (share links:
:mod:`climbd.storage.shares`).

Schema version 2 (:data:`EXPORTS_MIGRATION`, appended to
:data:`climbd.storage.database.MIGRATIONS`) adds:

- ``sessions.pinned`` (0/1): a pinned session is never deleted automatically
  (:mod:`climbd.retention`).
- ``exports``: one row per export job (kind, requested and actual range, status, output
  file relative to the state directory). Deleting a session deletes its exports
  (``ON DELETE CASCADE``); the files under ``exports/<id>/`` are removed by the caller (or by
  the retention sweep, which removes export directories that have no row).
- ``shares``: short-lived links to one export. Only the SHA-256 of the token is stored, so a
  copy of the database gives no working link.

:class:`ExportStore` reaches the export tables through an open
:class:`~climbd.storage.database.Database` (same connection, same lock, same error
translation: ``DiskFullError`` / ``StorageError``). :func:`read_poses_sync` reads a
session's poses with the plain :mod:`sqlite3` module, for the export worker process.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict

from climbd.errors import ExportNotFound, StorageError
from climbd.storage.posecodec import PoseSeries, decode_chunk

if TYPE_CHECKING:
    import aiosqlite

    from climbd.storage.database import Database

__all__ = [
    "ACTIVE_EXPORT_STATUSES",
    "EXPORTS_MIGRATION",
    "EXPORT_KINDS",
    "EXPORT_STATUSES",
    "ExportKind",
    "ExportNotFound",
    "ExportRecord",
    "ExportStatus",
    "ExportStore",
    "SessionAge",
    "read_poses_sync",
]

ExportKind = Literal["video", "overlay", "csv", "json"]
#: ``video``: stream copy; ``overlay``: skeleton burned in (H.264); ``csv``/``json``: poses.
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)
ExportStatus = Literal["queued", "running", "done", "failed", "cancelled"]
EXPORT_STATUSES: tuple[str, ...] = get_args(ExportStatus)
#: Statuses of an export whose worker has not finished yet.
ACTIVE_EXPORT_STATUSES: tuple[str, ...] = ("queued", "running")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


#: Schema version 2: ``sessions.pinned``, ``exports`` and ``shares``.
EXPORTS_MIGRATION = f"""
    ALTER TABLE sessions ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1));
    CREATE INDEX sessions_pinned_created ON sessions (pinned, created_at);
    CREATE TABLE exports (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id     INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        kind           TEXT    NOT NULL CHECK (kind IN ({_sql_list(EXPORT_KINDS)})),
        status         TEXT    NOT NULL DEFAULT 'queued'
                       CHECK (status IN ({_sql_list(EXPORT_STATUSES)})),
        start_s        REAL,
        end_s          REAL,
        speed          REAL    NOT NULL DEFAULT 1 CHECK (speed > 0),
        actual_start_s REAL,
        actual_end_s   REAL,
        frames         INTEGER NOT NULL DEFAULT 0,
        bytes          INTEGER NOT NULL DEFAULT 0,
        path           TEXT    NOT NULL DEFAULT '',
        error          TEXT,
        note           TEXT    NOT NULL DEFAULT '',
        owner_pid      INTEGER,
        created_at     REAL    NOT NULL,
        updated_at     REAL    NOT NULL,
        finished_at    REAL
    );
    CREATE INDEX exports_session ON exports (session_id);
    CREATE INDEX exports_status ON exports (status);
    CREATE TABLE shares (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        export_id    INTEGER NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
        token_sha256 TEXT    NOT NULL UNIQUE,
        base_url     TEXT    NOT NULL DEFAULT '',
        created_at   REAL    NOT NULL,
        expires_at   REAL    NOT NULL,
        revoked_at   REAL
    );
    CREATE INDEX shares_export ON shares (export_id);
"""

_EXPORT_COLUMNS = (
    "id, session_id, kind, status, start_s, end_s, speed, actual_start_s, actual_end_s, "
    "frames, bytes, path, error, note, owner_pid, created_at, updated_at, finished_at"
)
class ExportRecord(BaseModel):
    """One row of ``exports`` (immutable snapshot).

    Attributes:
        id: export id (also the name of its directory ``exports/<id>/``).
        session_id: the exported session.
        kind: 'video', 'overlay', 'csv' or 'json'.
        status: 'queued', 'running', 'done', 'failed' or 'cancelled'.
        start_s, end_s: requested range, seconds from the session start (None = open).
        speed: playback speed of an overlay export (1 = as recorded, 0.5 = half speed).
        actual_start_s, actual_end_s: range actually exported, session seconds (a stream
            copy starts at a keyframe), None until done.
        frames: video frames (or pose rows) written.
        bytes: size of the output file.
        path: the output file relative to the state directory ('' until done).
        error: why it failed, else None. note: remarks for the user (e.g. keyframe cut).
        owner_pid: process that runs the job (daemon or ``climbd export``).
        created_at, updated_at, finished_at: unix time, seconds.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    session_id: int
    kind: ExportKind
    status: ExportStatus
    start_s: float | None
    end_s: float | None
    speed: float
    actual_start_s: float | None
    actual_end_s: float | None
    frames: int
    bytes: int
    path: str
    error: str | None
    note: str
    owner_pid: int | None
    created_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> ExportRecord:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row


class SessionAge(BaseModel):
    """What retention needs to know about a session (see :meth:`ExportStore.sessions_by_age`).

    Attributes:
        id, name, status: as in ``sessions``; created_at: unix seconds; pinned: never
        deleted automatically; active_exports: exports of it still queued or running.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    status: str
    created_at: float
    pinned: bool
    active_exports: int


def _pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExportStore:
    """Rows of ``exports`` and ``shares`` (and the lifecycle queries), through ``db``.

    All methods are coroutines that share ``db``'s connection and lock.

    Raises (every method): ``DiskFullError`` when a write finds the disk full,
    ``StorageError`` on any other database error.
    """

    def __init__(self, db: Database):
        self.db = db

    # -- exports ---------------------------------------------------------------------------
    async def _get(self, conn: aiosqlite.Connection, export_id: int) -> ExportRecord:
        async with conn.execute(f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE id = ?",
                                (export_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise ExportNotFound("export", export_id)
        return ExportRecord._from_row(row)

    async def create(self, session_id: int, kind: str, *, start_s: float | None,
                     end_s: float | None, speed: float = 1.0,
                     owner_pid: int | None = None) -> ExportRecord:
        """Insert a 'queued' export of ``session_id``.

        Raises:
            SessionNotFound: no such session. ValueError: unknown ``kind``.
        """
        if kind not in EXPORT_KINDS:
            raise ValueError(f"kind must be one of {EXPORT_KINDS}, got {kind!r}")
        now = time.time()
        async with self.db.transaction("create export") as conn:
            await self.db.session_row(conn, session_id)
            cur = await conn.execute(
                "INSERT INTO exports (session_id, kind, status, start_s, end_s, speed, "
                "owner_pid, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (session_id, kind, start_s, end_s, float(speed),
                 os.getpid() if owner_pid is None else owner_pid, now, now))
            assert cur.lastrowid is not None
            return await self._get(conn, cur.lastrowid)

    async def get(self, export_id: int) -> ExportRecord:
        """The export with this id. Raises ExportNotFound."""
        async with self.db.read("get export") as conn:
            return await self._get(conn, export_id)

    async def list_exports(self, session_id: int | None = None,
                           limit: int = 50) -> list[ExportRecord]:
        """Exports, newest first (of one session when ``session_id`` is given)."""
        where, params = ("WHERE session_id = ?", (session_id,)) if session_id is not None \
            else ("", ())
        async with self.db.read("list exports") as conn, conn.execute(
            f"SELECT {_EXPORT_COLUMNS} FROM exports {where} ORDER BY id DESC LIMIT ?",
            (*params, int(limit)),
        ) as cur:
            rows = await cur.fetchall()
        return [ExportRecord._from_row(r) for r in rows]

    async def update(self, export_id: int, **values: Any) -> ExportRecord:
        """Set columns of an export (keys are column names of ours, never user input).

        ``status`` in 'done', 'failed' or 'cancelled' also sets ``finished_at``.

        Raises:
            ExportNotFound: no such export (e.g. deleted meanwhile).
            ValueError: an unknown column or status.
        """
        allowed = {"status", "actual_start_s", "actual_end_s", "frames", "bytes", "path",
                   "error", "note", "owner_pid"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not export columns: {sorted(bad)}")
        if "status" in values:
            if values["status"] not in EXPORT_STATUSES:
                raise ValueError(f"bad export status {values['status']!r}")
            if values["status"] not in ACTIVE_EXPORT_STATUSES:
                values["finished_at"] = time.time()
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        async with self.db.transaction("update export") as conn:
            cur = await conn.execute(f"UPDATE exports SET {assignments} WHERE id = ?",
                                     (*values.values(), export_id))
            if cur.rowcount == 0:
                raise ExportNotFound("export", export_id)
            return await self._get(conn, export_id)

    async def delete(self, export_id: int) -> ExportRecord:
        """Delete an export row (and its shares, by cascade); returns the deleted row."""
        async with self.db.transaction("delete export") as conn:
            record = await self._get(conn, export_id)
            await conn.execute("DELETE FROM exports WHERE id = ?", (export_id,))
            return record

    async def ids(self) -> set[int]:
        """Every export id (to find export directories without a row)."""
        async with self.db.read("list export ids") as conn, \
                conn.execute("SELECT id FROM exports") as cur:
            return {int(r[0]) for r in await cur.fetchall()}

    async def fail_orphaned(self, reason: str) -> list[ExportRecord]:
        """Mark 'queued'/'running' exports whose owner process is gone as 'failed'.

        Call when a job runner starts: the exports a previous daemon (or a killed
        ``climbd export``) left unfinished can never complete. Returns the updated rows.
        """
        async with self.db.transaction("fail orphaned exports") as conn:
            async with conn.execute(
                f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE status IN ('queued', 'running')"
            ) as cur:
                stale = [ExportRecord._from_row(r) for r in await cur.fetchall()]
            stale = [r for r in stale if r.owner_pid == os.getpid()
                     or not _pid_alive(r.owner_pid)]
            now = time.time()
            for r in stale:
                await conn.execute(
                    "UPDATE exports SET status = 'failed', error = ?, updated_at = ?, "
                    "finished_at = ? WHERE id = ?", (reason, now, now, r.id))
            return [await self._get(conn, r.id) for r in stale]

    # -- lifecycle -------------------------------------------------------------------------
    async def sessions_by_age(self) -> list[SessionAge]:
        """Every session, oldest first, with its pin and number of active exports."""
        async with self.db.read("sessions by age") as conn, conn.execute(
            "SELECT s.id, s.name, s.status, s.created_at, s.pinned, "
            "(SELECT COUNT(*) FROM exports e WHERE e.session_id = s.id "
            " AND e.status IN ('queued', 'running')) AS active_exports "
            "FROM sessions s ORDER BY s.created_at, s.id"
        ) as cur:
            rows = await cur.fetchall()
        return [SessionAge(id=r[0], name=r[1], status=r[2], created_at=r[3],
                           pinned=bool(r[4]), active_exports=r[5]) for r in rows]


def read_poses_sync(db_path: str | os.PathLike[str], session_id: int,
                    start_s: float | None = None, end_s: float | None = None) -> PoseSeries:
    """A session's poses with ``start_s <= t < end_s`` (session seconds), read-only.

    The blocking counterpart of :meth:`Database.poses` for the export worker process: it
    opens its own read-only connection (WAL lets it read while the daemon writes).

    Raises:
        StorageError: the database cannot be read or a chunk is corrupt.
    """
    lo = -np.inf if start_s is None else float(start_s)
    hi = np.inf if end_s is None else float(end_s)
    uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
            rows = conn.execute(
                "SELECT blob FROM pose_chunks WHERE session_id = ? AND t_start < ? "
                "AND t_end >= ? ORDER BY t_start, id", (session_id, hi, lo)).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read poses of session {session_id} from {db_path}: "
                           f"{exc}") from exc
    series = PoseSeries.concat([decode_chunk(r[0]) for r in rows])
    return series.slice_time(start_s, end_s)
