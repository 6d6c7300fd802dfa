"""The session catalog: one SQLite database (WAL) reached through aiosqlite.

Two tables:

- ``sessions``: one row per recording (name, climber, status, counters, video path...).
- ``pose_chunks``: the session's poses, one row per ~1 s of frames, each row a binary chunk
  made by :mod:`climbd.storage.posecodec` (never one row per frame). Deleting a session
  deletes its chunks (``ON DELETE CASCADE``).

Schema version 2 adds ``sessions.pinned`` and the ``exports`` and ``shares`` tables (see
:mod:`climbd.storage.exports`).

The database runs in WAL mode with ``synchronous=NORMAL``: a commit costs no fsync of the
main file, readers never block the writer, and a committed transaction survives a crash of
the daemon (a power cut may lose the last few commits, never corrupt the file). The schema
is versioned with ``PRAGMA user_version`` and upgraded by :data:`MIGRATIONS` on open.

All methods are coroutines; one :class:`Database` owns one connection (one worker thread in
aiosqlite) and serialises its transactions with an :class:`asyncio.Lock`, so it may be shared
by every task of the daemon's event loop.

Errors: ``SQLITE_FULL`` and ``ENOSPC`` raise :class:`~climbd.errors.DiskFullError`; any other
SQLite or OS error raises :class:`~climbd.errors.StorageError` naming the operation and the
database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, get_args

import aiosqlite
import numpy as np
from pydantic import BaseModel, ConfigDict

from climbd.errors import DiskFullError, SessionNotFound, StorageError
from climbd.storage.access_schema import OWNERS_MIGRATION, SECURITY_MIGRATION
from climbd.storage.attempts import ATTEMPTS_MIGRATION
from climbd.storage.backfill import BACKFILL_MIGRATION
from climbd.storage.exports import EXPORTS_MIGRATION
from climbd.storage.outbox import ARCHIVE_MIGRATION
from climbd.storage.posecodec import PoseSeries, decode_chunk, encode_chunk
from climbd.visibility import check_visible, session_filter_sql

__all__ = [
    "MIGRATIONS",
    "SESSION_STATUSES",
    "Database",
    "SessionRecord",
    "SessionStatus",
    "default_session_name",
]

log = logging.getLogger(__name__)

SessionStatus = Literal["recording", "completed", "processing", "interrupted", "failed"]
#: Every value the ``sessions.status`` column may hold.
SESSION_STATUSES: tuple[str, ...] = get_args(SessionStatus)

#: Schema migrations; ``MIGRATIONS[i]`` upgrades ``user_version`` i to i + 1. Append only.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE sessions (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT    NOT NULL,
        description      TEXT    NOT NULL DEFAULT '',
        climber          TEXT    NOT NULL DEFAULT '',
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        duration_s       REAL    NOT NULL DEFAULT 0,
        frame_count      INTEGER NOT NULL DEFAULT 0,
        frames_with_pose INTEGER NOT NULL DEFAULT 0,
        video_path       TEXT    NOT NULL DEFAULT '',
        status           TEXT    NOT NULL DEFAULT 'recording'
                         CHECK (status IN ({", ".join(repr(s) for s in SESSION_STATUSES)})),
        error            TEXT,
        width            INTEGER NOT NULL,
        height           INTEGER NOT NULL,
        fps              REAL    NOT NULL,
        source           TEXT    NOT NULL DEFAULT '',
        pre_roll_s       REAL    NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);
    CREATE INDEX sessions_status ON sessions (status);
    CREATE TABLE pose_chunks (
        id         INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        t_start    REAL    NOT NULL,
        t_end      REAL    NOT NULL,
        n          INTEGER NOT NULL CHECK (n > 0),
        blob       BLOB    NOT NULL
    );
    CREATE INDEX pose_chunks_session_time ON pose_chunks (session_id, t_start, t_end);
    """,
    EXPORTS_MIGRATION,  # 2: sessions.pinned, exports, shares (climbd.storage.exports)
    SECURITY_MIGRATION,  # 3: devices, tokens, pairing codes, session privacy (climbd.security)
    ATTEMPTS_MIGRATION,  # 4: attempts and attempt_analyses (climbd.storage.attempts)
    OWNERS_MIGRATION,  # 5: API token scopes, sessions.owner_token_id (climbd.security)
    ARCHIVE_MIGRATION,  # 6: sessions.uuid, sessions.archived_at, archive_outbox
    BACKFILL_MIGRATION,  # 7: sessions.pose_status, frames_analyzed, pose backfill tables
)

#: Up to this many chunks (~seconds) are decoded on the event loop; more go to a thread.
_DECODE_INLINE_CHUNKS = 8

_SESSION_COLUMNS = (
    "id, name, description, climber, created_at, updated_at, duration_s, frame_count, "
    "frames_with_pose, video_path, status, error, width, height, fps, source, pre_roll_s, "
    "pinned, owner_device_id, private, owner_token_id, uuid, archived_at, pose_status, "
    "frames_analyzed"
)


class SessionRecord(BaseModel):
    """One row of ``sessions`` (immutable snapshot).

    Attributes:
        id: session id (never reused, also the name of its directory).
        name, description, climber: free text set by the user.
        created_at, updated_at: wall-clock unix time, seconds.
        duration_s: recorded duration, seconds (as last committed).
        frame_count: video frames recorded (as last committed).
        frames_with_pose: frames that have a pose row (chunks hold exactly these).
        frames_analyzed: frames pose ran on (a person found or not; <= frame_count).
        pose_status: "live" while recording, "backfilling" while the recorded video is
            analysed for the frames live pose skipped, "complete" after
            (:mod:`climbd.storage.backfill`).
        video_path: the video file relative to the state directory ('' until known).
        status: 'recording', 'completed', 'processing', 'interrupted' or 'failed'.
        error: why the session failed or was interrupted, else None.
        width, height: video size in pixels; fps: nominal frame rate.
        source: the capture source the session came from.
        pre_roll_s: seconds of the session recorded before the trigger.
        pinned: never deleted automatically (retention).
        owner_device_id: the paired device that owns the session, or None.
        owner_token_id: the API token that started it, or None (neither: the box).
        private: visible only to the owner device and the admin (user-facing reads —
            :meth:`Database.get_session`, :meth:`~Database.list_sessions`,
            :meth:`~Database.poses`, edits and deletes — filter by the request's viewer,
            :mod:`climbd.visibility`).
        uuid: random version-4 UUID of the session (its archive key; never clashes
            between boxes).
        archived_at: unix time (s) the archive confirmed its last object, else None.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    description: str
    climber: str
    created_at: float
    updated_at: float
    duration_s: float
    frame_count: int
    frames_with_pose: int
    video_path: str
    status: SessionStatus
    error: str | None
    width: int
    height: int
    fps: float
    source: str
    pre_roll_s: float
    pinned: bool = False
    owner_device_id: int | None = None
    private: bool = False
    owner_token_id: int | None = None
    uuid: str | None = None
    archived_at: float | None = None
    pose_status: Literal["live", "backfilling", "complete"] = "complete"
    frames_analyzed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return self.model_dump()

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> SessionRecord:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        return "database or disk is full" in str(exc)
    return False


def default_session_name(created_at: float) -> str:
    """The name given to a session created without one, e.g. ``Session 2026-11-22 14:03``
    (local time)."""
    return time.strftime("Session %Y-%m-%d %H:%M", time.localtime(created_at))


class Database:
    """The session catalog. Create it with :meth:`open`, release it with :meth:`close`
    (or use ``async with``)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path):
        """Private: use :meth:`open`."""
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Database:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        Sets ``journal_mode=WAL``, ``synchronous=NORMAL``, ``foreign_keys=ON`` and a 5 s busy
        timeout (for outside tools holding a lock).

        Raises:
            StorageError: the file cannot be opened, is not a database, or was written by a
                newer climbd (its ``user_version`` is above ``len(MIGRATIONS)``).
            DiskFullError: no space to create the file or run a migration.
        """
        p = Path(path)
        conn: aiosqlite.Connection | None = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(p, isolation_level=None)
            conn.row_factory = sqlite3.Row
            db = cls(conn, p)
            async with db._guard("open"):
                await conn.execute("PRAGMA busy_timeout = 5000")
                mode = await db._scalar("PRAGMA journal_mode = WAL")
                if str(mode).lower() != "wal":
                    log.warning("%s: journal_mode is %s, not wal (filesystem without shared "
                                "memory?)", p, mode)
                await conn.execute("PRAGMA synchronous = NORMAL")
                await conn.execute("PRAGMA foreign_keys = ON")
                await db._migrate()
            return db
        except BaseException as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            if isinstance(exc, OSError | sqlite3.Error):
                raise _translate(exc, "open", p) from exc
            raise

    async def close(self) -> None:
        """Close the connection (idempotent). Committed data is already on disk."""
        with contextlib.suppress(ValueError, sqlite3.Error):
            await self._conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        version = int(await self._scalar("PRAGMA user_version"))
        if version > len(MIGRATIONS):
            raise StorageError(f"{self.path}: schema version {version} is newer than this "
                               f"climbd supports ({len(MIGRATIONS)}); upgrade climbd")
        for target in range(version + 1, len(MIGRATIONS) + 1):
            log.info("%s: migrating schema to version %d", self.path, target)
            try:
                await self._conn.executescript(
                    "BEGIN IMMEDIATE;\n" + MIGRATIONS[target - 1]
                    + f"\nPRAGMA user_version = {target};\nCOMMIT;"
                )
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.rollback()
                raise

    # -- plumbing --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _guard(self, action: str) -> AsyncIterator[None]:
        """Translate sqlite3/OS errors raised inside to StorageError / DiskFullError."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise _translate(exc, action, self.path) from exc
        except ValueError as exc:  # aiosqlite: "no active connection"
            if "connection" in str(exc).lower():
                raise StorageError(f"{action}: database {self.path} is closed") from exc
            raise

    # -- the public transaction/read API (other stores: exports, shares, access control) ----
    @contextlib.asynccontextmanager
    async def transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """Run the body as one write transaction (BEGIN IMMEDIATE ... COMMIT) on the shared
        connection, serialised with every other transaction and read.

        ``action`` names the operation in errors ("create export"). Rolls back on any
        exception.

        Raises:
            DiskFullError: SQLITE_FULL / ENOSPC. StorageError: any other sqlite/OS error.
        """
        async with self._lock, self._guard(action):
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    try:
                        await self._conn.execute("ROLLBACK")
                    except sqlite3.Error as exc:  # pragma: no cover - sqlite rolled back
                        log.warning("%s: rollback failed: %s", self.path, exc)
                raise

    @contextlib.asynccontextmanager
    async def read(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """Run the body's queries as one consistent read (a deferred transaction).

        Raises:
            StorageError: a sqlite/OS error (``action`` names the operation).
        """
        async with self._lock, self._guard(action):
            await self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    await self._conn.execute("COMMIT")

    async def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def session_row(self, conn: aiosqlite.Connection, session_id: int) -> SessionRecord:
        """The session row inside a :meth:`transaction`/:meth:`read`, whoever is looking
        (no visibility check: for stores that check the session exists).

        Raises:
            SessionNotFound: no such row.
        """
        async with conn.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?",
                                (session_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return SessionRecord._from_row(row)

    async def _set(self, conn: aiosqlite.Connection, session_id: int,
                   values: dict[str, Any]) -> SessionRecord:
        values = {**values, "updated_at": time.time()}
        assignments = ", ".join(f"{k} = ?" for k in values)  # keys are ours, never user input
        cur = await conn.execute(f"UPDATE sessions SET {assignments} WHERE id = ?",
                                 (*values.values(), session_id))
        if cur.rowcount == 0:
            raise SessionNotFound(session_id)
        return await self.session_row(conn, session_id)

    # -- sessions --------------------------------------------------------------------------
    async def create_session(self, *, name: str = "", description: str = "", climber: str = "",
                             source: str = "", width: int, height: int, fps: float,
                             pre_roll_s: float = 0.0, video_path: str = "",
                             owner_device_id: int | None = None,
                             owner_token_id: int | None = None) -> SessionRecord:
        """Insert a new session in status 'recording', created now.

        Args:
            name: display name; '' gives ``Session YYYY-MM-DD HH:MM`` (local time).
            width, height: video size, pixels; fps: nominal frame rate.
            pre_roll_s: seconds recorded before the trigger.
            video_path: video file relative to the state directory ('' if not known yet).
            owner_device_id, owner_token_id: who started it (neither: the box).

        Raises:
            DiskFullError, StorageError: the row cannot be written.
        """
        now = time.time()
        async with self.transaction("create session") as conn:
            cur = await conn.execute(
                "INSERT INTO sessions (name, description, climber, created_at, updated_at, "
                "video_path, status, width, height, fps, source, pre_roll_s, "
                "owner_device_id, owner_token_id, uuid, pose_status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'recording', ?, ?, ?, ?, ?, ?, ?, ?, 'live')",
                (name.strip() or default_session_name(now), description, climber, now, now,
                 video_path, int(width), int(height), float(fps), source, float(pre_roll_s),
                 owner_device_id, owner_token_id, str(uuid.uuid4())),
            )
            assert cur.lastrowid is not None
            return await self.session_row(conn, cur.lastrowid)

    async def append_poses(self, session_id: int, frames: np.ndarray, times: np.ndarray,
                           image: np.ndarray, world: np.ndarray, *, frame_count: int,
                           duration_s: float, analyzed: int | None = None) -> None:
        """Commit a recording's progress: one pose chunk plus the session's counters.

        One transaction inserts the chunk (skipped when ``n == 0``) and sets ``frame_count``
        and ``duration_s``, adding ``n`` to ``frames_with_pose``. This is the recorder's
        commit point (at least once a second): after it returns, the data survives a crash.

        Args:
            frames: ``(n,)`` int session frame indices of the poses.
            times: ``(n,)`` float seconds from session start, non-decreasing.
            image: ``(n, 33, 5)`` image landmarks; world: ``(n, 33, 3)`` metres.
            frame_count: video frames recorded so far; duration_s: seconds recorded so far.
            analyzed: frames pose ran on since the last call (added to ``frames_analyzed``;
                default ``n``, the frames with a pose).

        Raises:
            ValueError: array shapes disagree or times decrease.
            SessionNotFound: no such session.
            DiskFullError: the disk is full (nothing of this call is committed).
            StorageError: any other database error.
        """
        series = PoseSeries(frames, times, image, world)
        n = len(series)
        blob = encode_chunk(series.frames, series.times, series.image, series.world) if n else b""
        async with self.transaction("append poses") as conn:
            cur = await conn.execute(
                "UPDATE sessions SET frame_count = ?, duration_s = ?, "
                "frames_with_pose = frames_with_pose + ?, "
                "frames_analyzed = frames_analyzed + ?, updated_at = ? WHERE id = ?",
                (int(frame_count), float(duration_s), n, n if analyzed is None else int(analyzed),
                 time.time(), session_id),
            )
            if cur.rowcount == 0:
                raise SessionNotFound(session_id)
            if n:
                await conn.execute(
                    "INSERT INTO pose_chunks (session_id, t_start, t_end, n, blob) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (session_id, float(series.times[0]), float(series.times[-1]), n, blob),
                )

    async def finish_session(self, session_id: int, *, status: SessionStatus,
                             frame_count: int | None = None, duration_s: float | None = None,
                             video_path: str | None = None,
                             error: str | None = None) -> SessionRecord:
        """Set a session's final status (and, when given, its counters, video and error).

        Arguments left ``None`` keep their stored value, except ``error`` which is always
        written (``None`` clears it).

        Raises:
            ValueError: ``status`` is not one of :data:`SESSION_STATUSES`.
            SessionNotFound, DiskFullError, StorageError.
        """
        if status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {SESSION_STATUSES}, got {status!r}")
        values: dict[str, Any] = {"status": status, "error": error}
        if frame_count is not None:
            values["frame_count"] = int(frame_count)
        if duration_s is not None:
            values["duration_s"] = float(duration_s)
        if video_path is not None:
            values["video_path"] = video_path
        async with self.transaction("finish session") as conn:
            return await self._set(conn, session_id, values)

    async def update_session(self, session_id: int, *, name: str | None = None,
                             description: str | None = None,
                             climber: str | None = None,
                             pinned: bool | None = None) -> SessionRecord:
        """Edit a session's user-visible fields; ``None`` keeps a field as it is.

        ``pinned=True`` protects the session from automatic deletion (retention).

        Raises:
            ValueError: ``name`` is blank.
            SessionNotFound, DiskFullError, StorageError.
        """
        values: dict[str, Any] = {}
        if name is not None:
            if not name.strip():
                raise ValueError("a session name cannot be blank")
            values["name"] = name.strip()
        if description is not None:
            values["description"] = description
        if climber is not None:
            values["climber"] = climber
        if pinned is not None:
            values["pinned"] = int(bool(pinned))
        async with self.transaction("update session") as conn:
            current = check_visible(await self.session_row(conn, session_id))
            if not values:
                return current
            return await self._set(conn, session_id, values)

    async def get_session(self, session_id: int) -> SessionRecord:
        """The session with this id.

        Raises:
            SessionNotFound: no such session. StorageError: database error.
        """
        async with self.read("get session") as conn:
            return check_visible(await self.session_row(conn, session_id))

    async def list_sessions(self, *, limit: int = 20,
                            offset: int = 0) -> tuple[list[SessionRecord], int]:
        """A page of sessions, newest first, and the total number of sessions.

        Raises:
            ValueError: negative ``limit`` or ``offset``. StorageError: database error.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        visible, params = session_filter_sql()  # the request's viewer (climbd.visibility)
        async with self.read("list sessions") as conn:
            async with conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {visible} "
                "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", (*params, limit, offset),
            ) as cur:
                rows = await cur.fetchall()
            async with conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {visible}",
                                    params) as cur:
                total_row = await cur.fetchone()
        assert total_row is not None
        return [SessionRecord._from_row(r) for r in rows], int(total_row[0])

    async def delete_session(self, session_id: int) -> SessionRecord:
        """Delete a session and (by cascade) its pose chunks; return the deleted row.

        The caller removes the session's files (``video_path`` is relative to the state
        directory).

        Raises:
            SessionNotFound, DiskFullError, StorageError.
        """
        async with self.transaction("delete session") as conn:
            record = check_visible(await self.session_row(conn, session_id))
            await conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return record

    async def recover_interrupted(self) -> list[SessionRecord]:
        """Mark every session still 'recording' (the daemon died) as 'interrupted'.

        Call once at start-up, before any recording starts. Counters and pose chunks stay as
        last committed. Returns the updated records, oldest first; the caller then recovers
        their video (see :func:`climbd.storage.finalize`).

        Raises:
            DiskFullError, StorageError.
        """
        async with self.transaction("recover interrupted sessions") as conn:
            async with conn.execute(
                "SELECT id FROM sessions WHERE status = 'recording' ORDER BY id"
            ) as cur:
                ids = [int(r[0]) for r in await cur.fetchall()]
            return [await self._set(conn, i, {"status": "interrupted"}) for i in ids]

    # -- poses -----------------------------------------------------------------------------
    async def poses(self, session_id: int, start_s: float | None = None,
                    end_s: float | None = None) -> PoseSeries:
        """The session's poses with ``start_s <= time < end_s`` (seconds from session start).

        ``None`` leaves a side open. Only the chunks that overlap the range are read from
        disk, then the result is cut exactly, so a replay client can load a long session
        window by window.

        Raises:
            SessionNotFound: no such session.
            StorageError: database error or a corrupt chunk.
        """
        lo = -np.inf if start_s is None else float(start_s)
        hi = np.inf if end_s is None else float(end_s)
        async with self.read("read poses") as conn:
            check_visible(await self.session_row(conn, session_id))
            async with conn.execute(
                "SELECT blob FROM pose_chunks WHERE session_id = ? AND t_start < ? "
                "AND t_end >= ? ORDER BY t_start, id", (session_id, hi, lo),
            ) as cur:
                blobs = [r[0] for r in await cur.fetchall()]
        try:
            if len(blobs) > _DECODE_INLINE_CHUNKS:  # long ranges: keep the event loop free
                series = await asyncio.to_thread(_decode_all, blobs)
            else:
                series = _decode_all(blobs)
        except StorageError as exc:
            raise StorageError(f"session {session_id}: {exc}") from exc
        return series.slice_time(start_s, end_s)

    # -- maintenance -----------------------------------------------------------------------
    async def integrity_check(self) -> str:
        """Run ``PRAGMA integrity_check``; returns ``"ok"`` or SQLite's list of problems.

        Raises:
            StorageError: the check itself cannot run.
        """
        async with self.read("integrity check") as conn, \
                conn.execute("PRAGMA integrity_check") as cur:
            rows = await cur.fetchall()
        return "\n".join(str(r[0]) for r in rows)


def _decode_all(blobs: list[bytes]) -> PoseSeries:
    return PoseSeries.concat([decode_chunk(b) for b in blobs])


def _translate(exc: BaseException, action: str, path: Path) -> StorageError:
    if _is_disk_full(exc):
        return DiskFullError(f"{action}: disk full writing {path}: {exc}")
    return StorageError(f"{action}: database {path}: {exc}")
