"""Schema migration of the access-control tables (appended to
:data:`climbd.storage.database.MIGRATIONS`). Re-exported by :mod:`climbd.security.schema`.

- ``devices``: paired wall tablets (and phones); ``token_sha256`` is the SHA-256 of the
  device cookie, never the cookie itself.
- ``admin_sessions``: logged-in admin browsers (hashed cookie, absolute expiry).
- ``api_tokens``: bearer tokens for HTTP triggers (hashed).
- ``pairing_codes``: short-lived single-use codes (hashed) that pair a device (``device``)
  or set/reset the admin password (``admin``); written by the daemon and by
  ``climbd pair``, which share this database.
- ``auth_settings``: key/value, e.g. the admin password's scrypt hash.
- ``sessions.owner_device_id`` / ``sessions.private``: a private session is visible only to
  its owner device and the admin. Unpairing a device leaves its private sessions to the
  admin only (``ON DELETE SET NULL``).

:data:`OWNERS_MIGRATION` (the next one) adds:

- ``api_tokens.scope``: ``trigger``, ``read``, ``viewer`` or ``admin``
  (:data:`climbd.security.access.TOKEN_SCOPES`); older tokens were triggers.
- ``sessions.owner_token_id``: the API token that started a recording. A session with
  neither an owner device nor an owner token belongs to the box (GPIO, hands-free, ingest,
  sessions recorded before owners existed): only the admin changes its privacy.

Pure SQL text. It lives in the storage layer (which owns the schema); the access-control
store (:mod:`climbd.security.store`) reads and writes these tables.
"""

from __future__ import annotations

__all__ = ["OWNERS_MIGRATION", "SECURITY_MIGRATION"]

SECURITY_MIGRATION = """
    CREATE TABLE devices (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT    NOT NULL,
        token_sha256 TEXT    NOT NULL UNIQUE,
        created_at   REAL    NOT NULL,
        last_seen_at REAL    NOT NULL,
        user_agent   TEXT    NOT NULL DEFAULT ''
    );
    CREATE TABLE admin_sessions (
        token_sha256 TEXT PRIMARY KEY,
        created_at   REAL NOT NULL,
        expires_at   REAL NOT NULL,
        last_seen_at REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT    NOT NULL,
        token_sha256 TEXT    NOT NULL UNIQUE,
        created_at   REAL    NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE pairing_codes (
        code_sha256 TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('device', 'admin')),
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL,
        origin      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX pairing_codes_expiry ON pairing_codes (kind, expires_at);
    CREATE TABLE auth_settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ALTER TABLE sessions ADD COLUMN owner_device_id INTEGER
        REFERENCES devices (id) ON DELETE SET NULL;
    ALTER TABLE sessions ADD COLUMN private INTEGER NOT NULL DEFAULT 0
        CHECK (private IN (0, 1));
    CREATE INDEX sessions_owner ON sessions (owner_device_id);
"""

OWNERS_MIGRATION = """
    ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'trigger'
        CHECK (scope IN ('trigger', 'read', 'viewer', 'admin'));
    ALTER TABLE sessions ADD COLUMN owner_token_id INTEGER
        REFERENCES api_tokens (id) ON DELETE SET NULL;
"""
