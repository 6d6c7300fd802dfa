"""Pose backfill state on the session catalog: progress, staged chunks and the swap.

Schema (:data:`BACKFILL_MIGRATION`, appended to :data:`climbd.storage.database.MIGRATIONS`):

- ``sessions.pose_status``: ``"live"`` while recording (pose comes from the live stream,
  which may skip frames), ``"backfilling"`` while the backfill worker analyses the recorded
  video, ``"complete"`` when no more pose work will be done. Rows that existed before this
  migration are ``complete``.
- ``sessions.frames_analyzed``: video frames pose ran on (a person found or not), beside
  ``frames_with_pose`` (a person found). Old rows get ``frames_with_pose`` (a lower bound).
- ``pose_backfill``: one row per session being backfilled: ``next_frame`` (the first
  session frame index not yet covered by a staged chunk) — the resume point after a restart.
- ``pose_backfill_chunks``: the backfill's chunks (same codec as ``pose_chunks``), staged
  apart so replay, export and attempts keep reading the live rows until the fill is whole.

**The fill replaces the live rows** (:meth:`BackfillStore.complete`, one transaction): the
fill runs one tracker in frame order over every frame of the video, so its poses are
continuous; live rows come from ``pose.workers`` trackers taking whichever frame is newest,
and interleaving the two would put a tracker switch (sub-pixel to ~1 px jumps) at every
skipped frame. **Except where the fill found nobody**: a frame live pose found the climber
in but the fill did not (the fill sees the recorded H.264, live pose saw the camera's own
frames; a tracker that lost the climber re-detects a few frames later) keeps its live pose,
since a pose from another tracker is better than a hole in the skeleton. Every chunk and
progress update is one transaction, so a crash leaves either the live rows or the complete
fill.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from climbd.errors import SessionNotFound
from climbd.storage.posecodec import PoseSeries, decode_chunk

if TYPE_CHECKING:
    import aiosqlite

    from climbd.storage.database import Database, SessionRecord

__all__ = ["BACKFILL_MIGRATION", "POSE_STATUSES", "BackfillStore"]

#: Every value ``sessions.pose_status`` may hold.
POSE_STATUSES = ("live", "backfilling", "complete")

BACKFILL_MIGRATION = f"""
    ALTER TABLE sessions ADD COLUMN pose_status TEXT NOT NULL DEFAULT 'complete'
        CHECK (pose_status IN ({", ".join(repr(s) for s in POSE_STATUSES)}));
    ALTER TABLE sessions ADD COLUMN frames_analyzed INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET frames_analyzed = frames_with_pose;
    UPDATE sessions SET pose_status = 'live' WHERE status = 'recording';
    CREATE TABLE pose_backfill (
        session_id  INTEGER PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
        next_frame  INTEGER NOT NULL DEFAULT 0,
        started_at  REAL    NOT NULL,
        updated_at  REAL    NOT NULL
    );
    CREATE TABLE pose_backfill_chunks (
        id         INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        t_start    REAL    NOT NULL,
        t_end      REAL    NOT NULL,
        n          INTEGER NOT NULL CHECK (n > 0),
        blob       BLOB    NOT NULL
    );
    CREATE INDEX pose_backfill_chunks_session ON pose_backfill_chunks (session_id, t_start);
"""


async def _series(conn: aiosqlite.Connection, table: str, session_id: int) -> PoseSeries:
    """Every pose of ``session_id`` in ``table`` (a chunk table: ours, never user input)."""
    async with conn.execute(f"SELECT blob FROM {table} WHERE session_id = ? "
                            "ORDER BY t_start, id", (session_id,)) as cur:
        blobs = [r[0] for r in await cur.fetchall()]
    return PoseSeries.concat([decode_chunk(b) for b in blobs])


class BackfillStore:
    """Backfill progress of the sessions in an open :class:`Database` (same connection,
    lock and error translation: ``DiskFullError`` / ``StorageError``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, session_id: int) -> SessionRecord:
        """Decide what a finished session needs: ``complete`` at once when pose ran on
        every video frame or there is no finished video, else ``backfilling`` with a
        progress row (kept if one exists: the resume point). Returns the updated record.

        Raises:
            SessionNotFound, DiskFullError, StorageError.
        """
        async with self.db.transaction("begin pose backfill") as conn:
            rec = await self.db.session_row(conn, session_id)
            if rec.status in ("recording", "processing"):
                return rec
            needed = (rec.frames_analyzed < rec.frame_count
                      and rec.video_path.endswith(".mp4") and rec.status != "failed")
            if not needed:
                await conn.execute("DELETE FROM pose_backfill WHERE session_id = ?",
                                   (session_id,))
                await conn.execute("DELETE FROM pose_backfill_chunks WHERE session_id = ?",
                                   (session_id,))
                return await self.db._set(conn, session_id, {"pose_status": "complete"})
            now = time.time()
            await conn.execute(
                "INSERT OR IGNORE INTO pose_backfill (session_id, next_frame, started_at, "
                "updated_at) VALUES (?, 0, ?, ?)", (session_id, now, now))
            return await self.db._set(conn, session_id, {"pose_status": "backfilling"})

    async def pending(self) -> list[int]:
        """Sessions whose pose work is unfinished and that are not recording (``live``
        after a crash, or ``backfilling``), oldest first."""
        async with self.db.read("list pending backfills") as conn, conn.execute(
            "SELECT id FROM sessions WHERE pose_status != 'complete' "
            "AND status NOT IN ('recording', 'processing') ORDER BY id"
        ) as cur:
            return [int(r[0]) for r in await cur.fetchall()]

    async def next_frame(self, session_id: int) -> int:
        """The resume point: first session frame index without a staged chunk (0 if none).

        Raises:
            StorageError.
        """
        async with self.db.read("read backfill progress") as conn, conn.execute(
            "SELECT next_frame FROM pose_backfill WHERE session_id = ?", (session_id,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def add_chunk(self, session_id: int, next_frame: int, blob: bytes | None,
                        t_start: float = 0.0, t_end: float = 0.0, n: int = 0) -> None:
        """Stage one chunk (``blob`` of ``n`` poses, None when no person was found) and move
        the resume point to ``next_frame``, in one transaction.

        Raises:
            SessionNotFound: the session (or its backfill row) is gone (deleted meanwhile).
            DiskFullError, StorageError.
        """
        async with self.db.transaction("stage backfill chunk") as conn:
            cur = await conn.execute(
                "UPDATE pose_backfill SET next_frame = ?, updated_at = ? WHERE session_id = ?",
                (int(next_frame), time.time(), session_id))
            if cur.rowcount == 0:
                raise SessionNotFound(session_id)
            if blob is not None and n > 0:
                await conn.execute(
                    "INSERT INTO pose_backfill_chunks (session_id, t_start, t_end, n, blob) "
                    "VALUES (?, ?, ?, ?, ?)", (session_id, float(t_start), float(t_end),
                                               int(n), blob))

    async def complete(self, session_id: int, frames: int) -> SessionRecord:
        """Swap the staged chunks in for the session's pose rows, keeping live poses only in
        frames the fill found nobody in (see the module docstring), and mark it ``complete``
        with ``frames_analyzed = frames`` (the video frames the fill ran on) and
        ``frames_with_pose`` = the poses now stored.

        Raises:
            SessionNotFound, DiskFullError, StorageError.
        """
        async with self.db.transaction("complete pose backfill") as conn:
            await self.db.session_row(conn, session_id)
            async with conn.execute(
                "SELECT COALESCE(SUM(n), 0) FROM pose_backfill_chunks WHERE session_id = ?",
                (session_id,)) as cur:
                row = await cur.fetchone()
            with_pose = int(row[0]) if row else 0
            live = await _series(conn, "pose_chunks", session_id)
            fill = await _series(conn, "pose_backfill_chunks", session_id)
            keep = ~np.isin(live.frames, fill.frames)
            await conn.execute("DELETE FROM pose_chunks WHERE session_id = ?", (session_id,))
            if not keep.any():
                await conn.execute(
                    "INSERT INTO pose_chunks (session_id, t_start, t_end, n, blob) "
                    "SELECT session_id, t_start, t_end, n, blob FROM pose_backfill_chunks "
                    "WHERE session_id = ? ORDER BY t_start, id", (session_id,))
            else:
                both = PoseSeries.concat([fill, PoseSeries(
                    live.frames[keep], live.times[keep], live.image[keep], live.world[keep])])
                order = np.argsort(both.frames, kind="stable")
                merged = PoseSeries(both.frames[order], both.times[order], both.image[order],
                                    both.world[order])
                seconds = np.floor(merged.times).astype(np.int64)
                for sec in np.unique(seconds):
                    part = np.nonzero(seconds == sec)[0]
                    chunk = PoseSeries(merged.frames[part], merged.times[part],
                                       merged.image[part], merged.world[part])
                    await conn.execute(
                        "INSERT INTO pose_chunks (session_id, t_start, t_end, n, blob) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (session_id, float(chunk.times[0]), float(chunk.times[-1]),
                         len(chunk), chunk.encode()))
                with_pose = len(merged)
            await conn.execute("DELETE FROM pose_backfill_chunks WHERE session_id = ?",
                               (session_id,))
            await conn.execute("DELETE FROM pose_backfill WHERE session_id = ?",
                               (session_id,))
            return await self.db._set(conn, session_id, {
                "pose_status": "complete", "frames_analyzed": int(frames),
                "frames_with_pose": with_pose})

    async def give_up(self, session_id: int, reason: str) -> SessionRecord:
        """End a backfill that cannot finish (unreadable video): the live rows stay, the
        staged chunks are dropped, the session is ``complete`` (``frames_analyzed`` says how
        much pose ran). ``reason`` goes to the log only.

        Raises:
            SessionNotFound, DiskFullError, StorageError.
        """
        async with self.db.transaction("abandon pose backfill") as conn:
            await conn.execute("DELETE FROM pose_backfill_chunks WHERE session_id = ?",
                               (session_id,))
            await conn.execute("DELETE FROM pose_backfill WHERE session_id = ?",
                               (session_id,))
            return await self.db._set(conn, session_id, {"pose_status": "complete"})

    async def progress(self, session_id: int) -> dict[str, Any] | None:
        """``{"next_frame", "started_at", "updated_at"}`` of a running fill, else None."""
        async with self.db.read("read backfill progress") as conn, conn.execute(
            "SELECT next_frame, started_at, updated_at FROM pose_backfill WHERE session_id = ?",
            (session_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else {"next_frame": int(row[0]),
                                         "started_at": float(row[1]),
                                         "updated_at": float(row[2])}
