"""Archive outbox: which sessions still have to be copied to the S3 bucket.

:data:`ARCHIVE_MIGRATION` (schema version 6) adds:

- ``sessions.uuid``: a random RFC 4122 version-4 UUID per session (existing rows are
  backfilled; :meth:`~climbd.storage.database.Database.create_session` gives every new row
  one from :func:`uuid.uuid4`), so object keys never clash between boxes;
- ``sessions.archived_at``: unix time (s) at which the last object of the session was
  confirmed in the bucket (NULL: not archived);
- ``archive_outbox``: one row per session waiting for upload: ``done`` (JSON list of the
  object names already confirmed, so a restart resumes with the next object), ``tries``,
  ``next_try_at`` (unix s), ``last_error``. The row is deleted when ``archived_at`` is set
  (same transaction); it goes with its session (ON DELETE CASCADE).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # database.py imports this module's migration
    from climbd.storage.database import Database

__all__ = ["ARCHIVE_MIGRATION", "Outbox", "OutboxItem"]

#: SQL of a random version-4 UUID (evaluated per row: randomblob() is not constant).
_UUID4_SQL = (
    "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || "
    "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || "
    "'-' || lower(hex(randomblob(6)))"
)

ARCHIVE_MIGRATION = f"""
ALTER TABLE sessions ADD COLUMN uuid TEXT;
ALTER TABLE sessions ADD COLUMN archived_at REAL;
UPDATE sessions SET uuid = {_UUID4_SQL} WHERE uuid IS NULL;
CREATE TABLE archive_outbox (
    session_id  INTEGER PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    enqueued_at REAL    NOT NULL,
    done        TEXT    NOT NULL DEFAULT '[]',
    tries       INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL    NOT NULL DEFAULT 0,
    last_error  TEXT
);
"""


@dataclass(frozen=True)
class OutboxItem:
    """One session waiting for upload.

    Attributes:
        session_id: the session; done: object names already confirmed in the bucket;
        tries: failed attempts so far; next_try_at: unix time (s) of the next attempt;
        last_error: why the last attempt failed.
    """

    session_id: int
    done: tuple[str, ...]
    tries: int
    next_try_at: float
    last_error: str | None


class Outbox:
    """The ``archive_outbox`` table over the catalog's connection.

    Args:
        db: the open catalog (schema version >= 6).
    """

    def __init__(self, db: Database):
        self.db = db

    async def enqueue_pending(self) -> int:
        """Queue every completed session that is neither archived nor queued (recorded,
        saved, hands-free and ingested alike); returns how many were added."""
        async with self.db.transaction("queue sessions for the archive") as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO archive_outbox (session_id, enqueued_at) "
                "SELECT id, ? FROM sessions WHERE status = 'completed' AND archived_at IS NULL "
                "AND video_path != '' AND id NOT IN (SELECT session_id FROM archive_outbox)",
                (time.time(),))
            return int(cur.rowcount or 0)

    async def due(self, now: float | None = None, limit: int = 10) -> list[OutboxItem]:
        """Items whose next try is due, oldest first; a session whose pose is still being
        backfilled (``sessions.pose_status``, schema 7) waits until it is complete."""
        now = time.time() if now is None else now
        async with self.db.read("read the archive outbox") as conn, conn.execute(
            "SELECT o.session_id, o.done, o.tries, o.next_try_at, o.last_error "
            "FROM archive_outbox o JOIN sessions s ON s.id = o.session_id "
            "WHERE o.next_try_at <= ? AND s.pose_status = 'complete' "
            "ORDER BY o.enqueued_at, o.session_id LIMIT ?",
            (now, limit)) as cur:
            rows = await cur.fetchall()
        return [OutboxItem(int(r[0]), tuple(json.loads(r[1])), int(r[2]), float(r[3]), r[4])
                for r in rows]

    async def mark_object(self, session_id: int, name: str) -> None:
        """Record that object ``name`` of the session is confirmed in the bucket."""
        async with self.db.transaction("archive progress") as conn:
            async with conn.execute("SELECT done FROM archive_outbox WHERE session_id = ?",
                                    (session_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return
            done = json.loads(row[0])
            if name not in done:
                done.append(name)
            await conn.execute("UPDATE archive_outbox SET done = ? WHERE session_id = ?",
                               (json.dumps(done), session_id))

    async def failed(self, session_id: int, error: str, retry_at: float) -> None:
        """Count a failed attempt and schedule the next one at ``retry_at`` (unix s)."""
        async with self.db.transaction("archive failure") as conn:
            await conn.execute(
                "UPDATE archive_outbox SET tries = tries + 1, last_error = ?, next_try_at = ? "
                "WHERE session_id = ?", (error[:500], retry_at, session_id))

    async def complete(self, session_id: int, at: float | None = None) -> None:
        """Set ``sessions.archived_at`` and drop the outbox row (one transaction)."""
        at = time.time() if at is None else at
        async with self.db.transaction("archive done") as conn:
            await conn.execute("UPDATE sessions SET archived_at = ? WHERE id = ?",
                               (at, session_id))
            await conn.execute("DELETE FROM archive_outbox WHERE session_id = ?",
                               (session_id,))

    async def counts(self) -> dict[str, int]:
        """``{"pending", "failing", "archived", "unarchived"}`` session counts."""
        async with self.db.read("archive counts") as conn:
            async with conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(tries > 0), 0) FROM archive_outbox") as cur:
                row = await cur.fetchone()
            async with conn.execute(
                "SELECT COALESCE(SUM(archived_at IS NOT NULL), 0), "
                "COALESCE(SUM(archived_at IS NULL AND status = 'completed'), 0) "
                "FROM sessions") as cur:
                row2 = await cur.fetchone()
        assert row is not None and row2 is not None
        return {"pending": int(row[0]), "failing": int(row[1]), "archived": int(row2[0]),
                "unarchived": int(row2[1])}

    async def archived_before(self, before: float) -> list[int]:
        """Unpinned archived sessions recorded before ``before`` (unix s), oldest first."""
        async with self.db.read("archived sessions") as conn, conn.execute(
            "SELECT id FROM sessions WHERE archived_at IS NOT NULL AND pinned = 0 "
            "AND status != 'recording' AND created_at < ? ORDER BY created_at, id",
            (before,)) as cur:
            return [int(r[0]) for r in await cur.fetchall()]

    async def archived_ids(self) -> set[int]:
        """Ids of every session whose archive copy is confirmed (``archived_at`` set)."""
        async with self.db.read("archived session ids") as conn, conn.execute(
                "SELECT id FROM sessions WHERE archived_at IS NOT NULL") as cur:
            return {int(r[0]) for r in await cur.fetchall()}
