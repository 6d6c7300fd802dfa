"""Access control and abuse limits for the appliance's HTTP API and web UI.

Modules (none imported here, so the storage layer can import the pure ones cheaply):

- :mod:`~climbd.security.access`: roles, token scopes, principals, session-scoped routes.
- :mod:`~climbd.security.connections`: live connections per credential (caps, cut-off).
- :mod:`~climbd.security.local`: client of the local admin socket (the CLI uses it).
- :mod:`~climbd.security.store`: paired devices, API tokens, admin credentials, pairing
  codes (SQLite tables from :mod:`~climbd.security.schema`).
- :mod:`~climbd.security.crypto`: tokens, SHA-256 digests, CSRF tokens, scrypt.
- :mod:`~climbd.security.hosts`: ``Host`` allow-list and same-origin checks.
- :mod:`~climbd.security.ratelimit`: token buckets.
- :mod:`~climbd.security.scope`: the session-visibility scope of a request.
- :mod:`~climbd.security.transport`: TLS, per-client and global connection caps.

Policy only: nothing here imports aiohttp or :mod:`climbd.api`. The HTTP middleware that
applies it (host allow-list, authentication, CSRF and origin checks, access rules, rate
limits, session privacy, security headers) is :mod:`climbd.api.security`; the routes
(pairing, login, devices, tokens, session privacy) are in :mod:`climbd.api.auth`; the admin
socket in :mod:`climbd.api.admin_socket`; the design and its limits in ``THREAT_MODEL.md``.
"""
