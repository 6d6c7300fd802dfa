"""Access control and abuse limits for the appliance's HTTP API and web UI.

Modules (none imported here, so the storage layer can import the pure ones cheaply):

- :mod:`~climbd.security.access`: roles, principals, the access rule of each route.
- :mod:`~climbd.security.middleware`: the middleware (host allow-list, authentication,
  CSRF and origin checks, access rules, rate limits, session privacy) and security headers.
- :mod:`~climbd.security.store`: paired devices, API tokens, admin credentials, pairing
  codes (SQLite tables from :mod:`~climbd.security.schema`).
- :mod:`~climbd.security.crypto`: tokens, SHA-256 digests, CSRF tokens, scrypt.
- :mod:`~climbd.security.hosts`: ``Host`` allow-list and same-origin checks.
- :mod:`~climbd.security.ratelimit`: token buckets.
- :mod:`~climbd.security.scope`: the session-visibility scope of a request.
- :mod:`~climbd.security.transport`: TLS, per-client connection cap, request-head deadline.

The routes (pairing, login, devices, tokens, session privacy) are in
:mod:`climbd.api.auth`; the design and its limits in ``THREAT_MODEL.md``.
"""
