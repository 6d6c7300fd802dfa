"""Share links on the session catalog: short-lived links to one export.

The ``shares`` table comes with schema version 2 (:data:`climbd.storage.exports.
EXPORTS_MIGRATION`). Only the SHA-256 of a link's token is stored, so a copy of the database
gives no working link (tokens: :mod:`climbd.share`). :class:`ShareStore` reaches the table
through an open :class:`~climbd.storage.database.Database` (same connection, lock and error
translation). A share belongs to its export: deleting the export (or its session) deletes
it (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from climbd.errors import ExportNotFound

if TYPE_CHECKING:
    import aiosqlite

    from climbd.storage.database import Database

__all__ = ["ShareRecord", "ShareStore"]

_SHARE_COLUMNS = "id, export_id, token_sha256, base_url, created_at, expires_at, revoked_at"


class ShareRecord(BaseModel):
    """One row of ``shares``: a link to one export (the token itself is never stored).

    Attributes:
        id: share id (for revoking). export_id: the shared export.
        token_sha256: hex SHA-256 of the token in the link.
        base_url: scheme://host[:port] the link was made for (the QR code encodes it).
        created_at, expires_at: unix time, seconds. revoked_at: unix time or None.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    export_id: int
    token_sha256: str
    base_url: str
    created_at: float
    expires_at: float
    revoked_at: float | None

    def state(self, now: float | None = None) -> Literal["active", "expired", "revoked"]:
        """'revoked' (wins), 'expired' (``now >= expires_at``) or 'active'."""
        if self.revoked_at is not None:
            return "revoked"
        if (time.time() if now is None else now) >= self.expires_at:
            return "expired"
        return "active"

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> ShareRecord:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row


class ShareStore:
    """The ``shares`` table.

    Args:
        db: the open session catalog.
    """

    def __init__(self, db: Database):
        self.db = db

    async def _get_share(self, conn: aiosqlite.Connection, share_id: int) -> ShareRecord:
        async with conn.execute(f"SELECT {_SHARE_COLUMNS} FROM shares WHERE id = ?",
                                (share_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise ExportNotFound("share", share_id)
        return ShareRecord._from_row(row)

    async def create_share(self, export_id: int, token_sha256: str, *, base_url: str,
                           expires_at: float) -> ShareRecord:
        """Store a share of ``export_id`` (the token's hash only).

        Raises:
            ExportNotFound: no such export.
        """
        async with self.db.transaction("create share") as conn:
            async with conn.execute("SELECT 1 FROM exports WHERE id = ?", (export_id,)) as cur:
                if await cur.fetchone() is None:
                    raise ExportNotFound("export", export_id)
            cur = await conn.execute(
                "INSERT INTO shares (export_id, token_sha256, base_url, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (export_id, token_sha256, base_url, time.time(), float(expires_at)))
            assert cur.lastrowid is not None
            return await self._get_share(conn, cur.lastrowid)

    async def share_by_hash(self, token_sha256: str) -> ShareRecord | None:
        """The share whose token hashes to ``token_sha256``, or None."""
        async with self.db.read("find share") as conn, conn.execute(
            f"SELECT {_SHARE_COLUMNS} FROM shares WHERE token_sha256 = ?", (token_sha256,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else ShareRecord._from_row(row)

    async def get_share(self, share_id: int) -> ShareRecord:
        """The share with this id. Raises ExportNotFound."""
        async with self.db.read("get share") as conn:
            return await self._get_share(conn, share_id)

    async def shares_of(self, export_id: int) -> list[ShareRecord]:
        """Every share of an export, oldest first."""
        async with self.db.read("list shares") as conn, conn.execute(
            f"SELECT {_SHARE_COLUMNS} FROM shares WHERE export_id = ? ORDER BY id",
            (export_id,),
        ) as cur:
            return [ShareRecord._from_row(r) for r in await cur.fetchall()]

    async def revoke_share(self, share_id: int) -> ShareRecord:
        """Revoke a share now (idempotent: an earlier revocation time is kept)."""
        async with self.db.transaction("revoke share") as conn:
            cur = await conn.execute(
                "UPDATE shares SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (time.time(), share_id))
            if cur.rowcount == 0:
                raise ExportNotFound("share", share_id)
            return await self._get_share(conn, share_id)

    async def purge_shares(self, before: float) -> int:
        """Delete share rows that expired or were revoked before ``before`` (unix s)."""
        async with self.db.transaction("purge shares") as conn:
            cur = await conn.execute(
                "DELETE FROM shares WHERE expires_at < ? OR revoked_at < ?", (before, before))
            return int(cur.rowcount or 0)
