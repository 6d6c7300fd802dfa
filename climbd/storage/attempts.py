"""Attempts found in a session, with their metrics, on the session catalog.

Schema (:data:`ATTEMPTS_MIGRATION`, appended to :data:`climbd.storage.database.MIGRATIONS`):

- ``attempt_analyses``: one row per analysed session: when, from how many poses, with which
  detector version. A session without a row has not been analysed yet (different from "no
  attempt found"); a row whose ``frames_with_pose`` differs from the session's means pose was
  filled in later and the analysis is stale.
- ``attempts``: the session's attempts in time order (``idx`` 0, 1, ...): ``start_s``,
  ``end_s`` (NULL = the attempt runs to the end of the session), ``end_reason`` and the
  metrics as JSON text (:func:`climbd.attempts.metrics.attempt_metrics`).

Both cascade on session delete. :class:`AttemptStore` reaches them through an open
:class:`~climbd.storage.database.Database` (same connection, lock and error translation:
``DiskFullError`` / ``StorageError``), like :class:`~climbd.storage.exports.ExportStore`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climbd.storage.database import Database

__all__ = ["ATTEMPTS_MIGRATION", "AttemptStore", "summary"]

ATTEMPTS_MIGRATION = """
    CREATE TABLE attempt_analyses (
        session_id       INTEGER PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
        computed_at      REAL    NOT NULL,
        frames_with_pose INTEGER NOT NULL,
        version          INTEGER NOT NULL
    );
    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        start_s     REAL    NOT NULL,
        end_s       REAL,
        end_reason  TEXT,
        metrics     TEXT    NOT NULL DEFAULT '{}',
        UNIQUE (session_id, idx)
    );
"""

#: Headline metrics kept in :func:`summary` (the sessions list); the rest is per attempt.
_SUMMARY_METRICS = ("time_on_wall_s", "height_gained_m", "hip_path_m", "mean_hip_speed_mps",
                    "peak_hip_speed_mps", "economy")


def summary(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt without its time series (angles, centre-of-mass path): for lists."""
    m = attempt.get("metrics") or {}
    out = {k: v for k, v in attempt.items() if k != "metrics"}
    out["metrics"] = {k: m.get(k) for k in _SUMMARY_METRICS}
    out["metrics"]["pauses"] = len(m.get("pauses") or [])
    return out


class AttemptStore:
    """Rows of ``attempts`` and ``attempt_analyses`` through ``db`` (coroutines sharing its
    connection and lock).

    Raises (every method): ``SessionNotFound`` when the session does not exist (or is not
    visible to the request's viewer), ``DiskFullError`` when a write finds the disk full,
    ``StorageError`` on any other database error.
    """

    def __init__(self, db: Database):
        self.db = db

    async def replace(self, session_id: int, attempts: list[dict[str, Any]], *,
                      frames_with_pose: int, version: int) -> None:
        """Store a session's analysis, replacing any earlier one, in one transaction.

        Args:
            attempts: ``[{"start_s", "end_s", "end_reason"?, "metrics"?}]`` in time order.
            frames_with_pose: how many poses the analysis saw; version: detector version.
        """
        async with self.db.transaction("store attempts") as conn:
            await self.db.session_row(conn, session_id)
            await conn.execute("DELETE FROM attempts WHERE session_id = ?", (session_id,))
            await conn.executemany(
                "INSERT INTO attempts (session_id, idx, start_s, end_s, end_reason, metrics) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(session_id, i, float(a["start_s"]),
                  None if a.get("end_s") is None else float(a["end_s"]),
                  a.get("end_reason"), json.dumps(a.get("metrics") or {}))
                 for i, a in enumerate(attempts)])
            await conn.execute(
                "INSERT OR REPLACE INTO attempt_analyses (session_id, computed_at, "
                "frames_with_pose, version) VALUES (?, ?, ?, ?)",
                (session_id, time.time(), int(frames_with_pose), int(version)))

    async def analysis(self, session_id: int) -> dict[str, Any] | None:
        """``{"computed_at", "frames_with_pose", "version"}`` or None if never analysed."""
        await self.db.get_session(session_id)  # exists and is visible to the viewer
        async with self.db.read("read attempt analysis") as conn, conn.execute(
            "SELECT computed_at, frames_with_pose, version FROM attempt_analyses "
            "WHERE session_id = ?", (session_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else dict(row)

    async def for_session(self, session_id: int, *,
                          with_metrics: bool = True) -> list[dict[str, Any]]:
        """The session's attempts in time order (``[]`` if none or not analysed).

        Each: ``{"index", "start_s", "end_s" | None, "duration_s" | None, "end_reason",
        "metrics"}`` (``with_metrics=False``: headline metrics only, see :func:`summary`).
        """
        await self.db.get_session(session_id)  # exists and is visible to the viewer
        async with self.db.read("read attempts") as conn:
            rows = await self._rows(conn, [session_id])
        out = rows.get(session_id, [])
        return out if with_metrics else [summary(a) for a in out]

    async def for_sessions(self, session_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Headline attempts (:func:`summary`) of many sessions at once (for lists); the
        caller has already checked the sessions are visible."""
        if not session_ids:
            return {}
        async with self.db.read("read attempts") as conn:
            rows = await self._rows(conn, session_ids)
        return {sid: [summary(a) for a in v] for sid, v in rows.items()}

    @staticmethod
    async def _rows(conn: Any, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        marks = ", ".join("?" for _ in ids)
        async with conn.execute(
            f"SELECT session_id, idx, start_s, end_s, end_reason, metrics FROM attempts "
            f"WHERE session_id IN ({marks}) ORDER BY session_id, idx", tuple(ids)) as cur:
            rows = await cur.fetchall()
        out: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            end = r["end_s"]
            out.setdefault(int(r["session_id"]), []).append({
                "index": int(r["idx"]), "start_s": r["start_s"], "end_s": end,
                "duration_s": None if end is None else round(end - r["start_s"], 3),
                "end_reason": r["end_reason"], "metrics": json.loads(r["metrics"]),
            })
        return out
