"""The access-control tables (:mod:`climbd.security.schema`), reached through the daemon's
:class:`~climbd.storage.database.Database` (same connection, lock and error translation).

Paired devices, API tokens and admin sessions are few (tens) and written only by the daemon,
so :class:`AuthStore` keeps them in memory, keyed by the SHA-256 of their secret: checking a
cookie or a bearer token costs a dictionary lookup, never a database query (a flood of bogus
cookies cannot queue behind the recorder's commits). Pairing codes are also written by
``climbd pair`` (another process), so they are always read from the database.

"Last seen" times are kept in memory and written back at most every
:data:`SEEN_FLUSH_S` seconds per device or token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from climbd.security import crypto

if TYPE_CHECKING:
    from climbd.storage.database import Database

__all__ = ["MAX_ACTIVE_CODES", "ApiToken", "AuthStore", "Device"]

CodeKind = Literal["device", "admin"]
#: Seconds between writes of a device's or token's "last seen" time.
SEEN_FLUSH_S = 600.0
#: Pairing codes of one kind that may be valid at once; making one more drops the oldest
#: (each valid code adds to the odds of a guess, see THREAT_MODEL.md).
MAX_ACTIVE_CODES = 5
#: Device and token names, characters.
NAME_MAX = 64
_ADMIN_PASSWORD_KEY = "admin_password"
#: Scopes of API tokens (the same tuple as climbd.security.access.TOKEN_SCOPES).
TOKEN_SCOPES = ("trigger", "read", "viewer", "admin")


@dataclass(frozen=True)
class Device:
    """A paired device (its cookie is never kept, only the cookie's SHA-256)."""

    id: int
    name: str
    created_at: float
    last_seen_at: float
    user_agent: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times in Unix seconds)."""
        return asdict(self)


@dataclass(frozen=True)
class ApiToken:
    """An API token (bearer secret for HTTP triggers); the secret is shown once."""

    id: int
    name: str
    created_at: float
    last_used_at: float | None = None
    #: 'trigger', 'read', 'viewer' or 'admin' (climbd.security.access.TOKEN_SCOPES)
    scope: str = "trigger"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times in Unix seconds)."""
        return asdict(self)


@dataclass
class _AdminSession:
    created_at: float
    expires_at: float
    last_seen_at: float


class AuthStore:
    """Devices, tokens, admin credentials and pairing codes of one database.

    Call :meth:`load` once before use (idempotent; the middleware does it lazily).
    """

    def __init__(self, db: Database):
        self.db = db
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._devices: dict[str, Device] = {}
        self._tokens: dict[str, ApiToken] = {}
        self._admin: dict[str, _AdminSession] = {}
        self._admin_hash: str | None = None
        self._flushed: dict[tuple[str, int], float] = {}

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        """Read devices, tokens, admin sessions and the admin password hash into memory."""
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            async with self.db.read("load access control") as conn:
                async with conn.execute(
                    "SELECT id, name, token_sha256, created_at, last_seen_at, user_agent "
                    "FROM devices") as cur:
                    for r in await cur.fetchall():
                        self._devices[r["token_sha256"]] = Device(
                            r["id"], r["name"], r["created_at"], r["last_seen_at"],
                            r["user_agent"])
                async with conn.execute(
                    "SELECT id, name, token_sha256, created_at, last_used_at, scope "
                    "FROM api_tokens") as cur:
                    for r in await cur.fetchall():
                        self._tokens[r["token_sha256"]] = ApiToken(
                            r["id"], r["name"], r["created_at"], r["last_used_at"],
                            r["scope"])
                async with conn.execute(
                    "SELECT token_sha256, created_at, expires_at, last_seen_at "
                    "FROM admin_sessions WHERE expires_at > ?", (time.time(),)) as cur:
                    for r in await cur.fetchall():
                        self._admin[r["token_sha256"]] = _AdminSession(
                            r["created_at"], r["expires_at"], r["last_seen_at"])
                async with conn.execute("SELECT value FROM auth_settings WHERE key = ?",
                                        (_ADMIN_PASSWORD_KEY,)) as cur:
                    row = await cur.fetchone()
                    self._admin_hash = None if row is None else str(row[0])
            self._loaded = True

    # -- devices ---------------------------------------------------------------------------
    def device_for(self, cookie: str | None) -> Device | None:
        """The paired device a cookie value belongs to, or None."""
        if not cookie or len(cookie) > 256:
            return None
        return self._devices.get(crypto.token_hash(cookie))

    def devices(self) -> list[Device]:
        """Every paired device, oldest first."""
        return sorted(self._devices.values(), key=lambda d: d.id)

    def device(self, device_id: int) -> Device | None:
        """The paired device with this id, or None."""
        return next((d for d in self._devices.values() if d.id == device_id), None)

    async def pair_device(self, name: str, user_agent: str = "") -> tuple[Device, str]:
        """Create a device and its cookie value (returned once; only its hash is stored)."""
        token = crypto.new_token()
        digest = crypto.token_hash(token)
        now = time.time()
        name = name.strip()[:NAME_MAX] or "Tablet"
        async with self.db.transaction("pair device") as conn:
            cur = await conn.execute(
                "INSERT INTO devices (name, token_sha256, created_at, last_seen_at, user_agent)"
                " VALUES (?, ?, ?, ?, ?)", (name, digest, now, now, user_agent[:200]))
            assert cur.lastrowid is not None
            device = Device(cur.lastrowid, name, now, now, user_agent[:200])
        self._devices[digest] = device
        return device, token

    async def rename_device(self, device_id: int, name: str) -> Device | None:
        """Rename a device; None if there is no such device."""
        for digest, d in self._devices.items():
            if d.id == device_id:
                async with self.db.transaction("rename device") as conn:
                    await conn.execute("UPDATE devices SET name = ? WHERE id = ?",
                                       (name.strip()[:NAME_MAX], device_id))
                self._devices[digest] = replace(d, name=name.strip()[:NAME_MAX])
                return self._devices[digest]
        return None

    async def remove_device(self, device_id: int) -> Device | None:
        """Unpair a device (its cookie stops working at once); None if unknown. Its
        private sessions stay private, visible to the admin only."""
        for digest, d in list(self._devices.items()):
            if d.id == device_id:
                async with self.db.transaction("remove device") as conn:
                    await conn.execute("DELETE FROM devices WHERE id = ?", (device_id,))
                del self._devices[digest]
                return d
        return None

    async def touch_device(self, device: Device, user_agent: str = "") -> None:
        """Record that a device was seen now (written at most every SEEN_FLUSH_S)."""
        now = time.time()
        if now - self._flushed.get(("device", device.id), 0.0) < SEEN_FLUSH_S:
            return
        self._flushed[("device", device.id)] = now
        async with self.db.transaction("device seen") as conn:
            await conn.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?",
                               (now, device.id))
        for digest, d in self._devices.items():
            if d.id == device.id:
                self._devices[digest] = replace(d, last_seen_at=now)

    # -- API tokens ------------------------------------------------------------------------
    def token_for(self, secret: str) -> ApiToken | None:
        """The API token a bearer secret belongs to, or None."""
        if not secret.startswith(crypto.API_TOKEN_PREFIX) or len(secret) > 256:
            return None
        return self._tokens.get(crypto.token_hash(secret))

    def tokens(self) -> list[ApiToken]:
        """Every API token, oldest first (never the secrets)."""
        return sorted(self._tokens.values(), key=lambda t: t.id)

    async def create_token(self, name: str, scope: str = "trigger") -> tuple[ApiToken, str]:
        """A new API token and its secret (returned once; only its hash is stored).

        Raises:
            ValueError: ``scope`` is not one of ``trigger``, ``read``, ``viewer``, ``admin``.
        """
        if scope not in TOKEN_SCOPES:
            raise ValueError(f"unknown token scope {scope!r}; one of {', '.join(TOKEN_SCOPES)}")
        secret = crypto.new_token(crypto.API_TOKEN_PREFIX)
        digest = crypto.token_hash(secret)
        now = time.time()
        name = name.strip()[:NAME_MAX] or "token"
        async with self.db.transaction("create API token") as conn:
            cur = await conn.execute(
                "INSERT INTO api_tokens (name, token_sha256, created_at, scope) "
                "VALUES (?, ?, ?, ?)", (name, digest, now, scope))
            assert cur.lastrowid is not None
            tok = ApiToken(cur.lastrowid, name, now, None, scope)
        self._tokens[digest] = tok
        return tok, secret

    async def remove_token(self, token_id: int) -> ApiToken | None:
        """Revoke an API token; None if unknown."""
        for digest, t in list(self._tokens.items()):
            if t.id == token_id:
                async with self.db.transaction("remove API token") as conn:
                    await conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
                del self._tokens[digest]
                return t
        return None

    async def touch_token(self, token: ApiToken) -> None:
        """Record that a token was used now (written at most every SEEN_FLUSH_S)."""
        now = time.time()
        if now - self._flushed.get(("token", token.id), 0.0) < SEEN_FLUSH_S:
            return
        self._flushed[("token", token.id)] = now
        async with self.db.transaction("token used") as conn:
            await conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                               (now, token.id))
        for digest, t in self._tokens.items():
            if t.id == token.id:
                self._tokens[digest] = replace(t, last_used_at=now)

    # -- admin -----------------------------------------------------------------------------
    @property
    def admin_configured(self) -> bool:
        """True once an admin password has been set."""
        return self._admin_hash is not None

    @property
    def admin_password_hash(self) -> str | None:
        """The stored scrypt hash of the admin password, or None (first run)."""
        return self._admin_hash

    async def set_admin_password_hash(self, digest: str) -> None:
        """Store a new admin password hash; every admin session ends."""
        async with self.db.transaction("set admin password") as conn:
            await conn.execute(
                "INSERT INTO auth_settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_ADMIN_PASSWORD_KEY, digest))
            await conn.execute("DELETE FROM admin_sessions")
        self._admin_hash = digest
        self._admin.clear()

    async def create_admin_session(self, max_age_s: float) -> str:
        """A new admin session cookie value, valid at most ``max_age_s`` seconds."""
        token = crypto.new_token()
        digest = crypto.token_hash(token)
        now = time.time()
        async with self.db.transaction("admin login") as conn:
            await conn.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))
            await conn.execute(
                "INSERT INTO admin_sessions (token_sha256, created_at, expires_at, "
                "last_seen_at) VALUES (?, ?, ?, ?)", (digest, now, now + max_age_s, now))
        self._admin[digest] = _AdminSession(now, now + max_age_s, now)
        return token

    def admin_session_valid(self, cookie: str | None, idle_s: float) -> bool:
        """True if the cookie is a live admin session (not past its absolute expiry, used
        within the last ``idle_s`` seconds); marks it used now."""
        if not cookie or len(cookie) > 256:
            return False
        digest = crypto.token_hash(cookie)
        s = self._admin.get(digest)
        if s is None:
            return False
        now = time.time()
        if now >= s.expires_at or now - s.last_seen_at > idle_s:
            del self._admin[digest]
            return False
        s.last_seen_at = now
        return True

    async def end_admin_session(self, cookie: str | None) -> None:
        """Log an admin session out (no-op for an unknown cookie)."""
        if not cookie or len(cookie) > 256:
            return
        digest = crypto.token_hash(cookie)
        if self._admin.pop(digest, None) is not None:
            async with self.db.transaction("admin logout") as conn:
                await conn.execute("DELETE FROM admin_sessions WHERE token_sha256 = ?",
                                   (digest,))

    # -- pairing codes ---------------------------------------------------------------------
    async def create_code(self, kind: CodeKind, ttl_s: float, origin: str = "",
                          digits: int = crypto.PAIRING_CODE_DIGITS) -> tuple[str, float]:
        """A new single-use pairing code of ``kind`` valid ``ttl_s`` seconds: returns the
        code (``digits`` digits: 8, or 12 for ``climbd pair``) and its expiry (Unix
        seconds). Keeps at most MAX_ACTIVE_CODES valid codes of a kind (the oldest goes)."""
        code = crypto.new_pairing_code(digits)
        now = time.time()
        expires = now + ttl_s
        async with self.db.transaction("create pairing code") as conn:
            await conn.execute("DELETE FROM pairing_codes WHERE expires_at <= ?", (now,))
            await conn.execute(
                "DELETE FROM pairing_codes WHERE kind = ? AND code_sha256 NOT IN ("
                "SELECT code_sha256 FROM pairing_codes WHERE kind = ? "
                "ORDER BY created_at DESC LIMIT ?)", (kind, kind, MAX_ACTIVE_CODES - 1))
            await conn.execute(
                "INSERT OR REPLACE INTO pairing_codes (code_sha256, kind, created_at, "
                "expires_at, origin) VALUES (?, ?, ?, ?, ?)",
                (crypto.code_hash(kind, code), kind, now, expires, origin[:64]))
        return code, expires

    async def redeem_code(self, kind: CodeKind, typed: str) -> bool:
        """Use up a pairing code: True (and the code is gone) if it is valid now."""
        code = crypto.normalize_code(typed)
        if code is None:
            return False
        async with self.db.transaction("redeem pairing code") as conn:
            cur = await conn.execute(
                "DELETE FROM pairing_codes WHERE code_sha256 = ? AND kind = ? "
                "AND expires_at > ?", (crypto.code_hash(kind, code), kind, time.time()))
            return bool(cur.rowcount)

    async def active_codes(self, kind: CodeKind) -> int:
        """How many codes of ``kind`` are valid now."""
        async with self.db.read("count pairing codes") as conn, conn.execute(
                "SELECT COUNT(*) FROM pairing_codes WHERE kind = ? AND expires_at > ?",
                (kind, time.time())) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- session ownership -----------------------------------------------------------------
    async def set_privacy(self, session_id: int, *, private: bool,
                          owner_device_id: int | None) -> None:
        """Set a session's ``private`` flag and owner (no visibility check here)."""
        async with self.db.transaction("set session privacy") as conn:
            await conn.execute(
                "UPDATE sessions SET private = ?, owner_device_id = ?, updated_at = ? "
                "WHERE id = ?", (int(private), owner_device_id, time.time(), session_id))

    async def session_of(self, table: Literal["exports", "shares"], row_id: int) -> int | None:
        """The session an export or a share belongs to, or None if the row does not
        exist."""
        sql = ("SELECT session_id FROM exports WHERE id = ?" if table == "exports" else
               "SELECT e.session_id FROM shares s JOIN exports e ON e.id = s.export_id "
               "WHERE s.id = ?")
        async with self.db.read("resolve session") as conn, \
                conn.execute(sql, (row_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else int(row[0])
