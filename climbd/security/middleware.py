"""The security layer of the HTTP API: one middleware plus response headers.

Every request, in this order:

1. **Host allow-list** (:mod:`climbd.security.hosts`): an unknown ``Host`` gets
   ``421 Misdirected Request`` (RFC 9110 §15.5.20) — DNS rebinding ends here.
2. **Per-client request rate** (token bucket per IPv4 address / IPv6 /64):
   ``429 Too Many Requests`` with ``Retry-After`` (RFC 6585 §4).
3. **Who is calling** (:class:`~climbd.security.access.Principal`): ``Authorization:
   Bearer`` API token (RFC 6750; a bad one is ``401`` with ``WWW-Authenticate``), else the
   admin session cookie, else the paired-device cookie, else — with
   ``security.loopback_is_trusted`` — a same-machine request to a loopback name that no
   other web origin sent is the admin, else anonymous.
4. **Cross-origin and CSRF**: a state-changing request (any method but GET/HEAD/OPTIONS,
   RFC 9110 §9.2.1) or a WebSocket handshake that a browser marks as coming from another
   origin (``Origin``/``Referer`` not this origin, or ``Sec-Fetch-Site: cross-site`` /
   ``same-site``) is refused with 403, unless it carries an API token (no ambient
   credentials). A state-changing request authenticated by cookie must also carry
   ``X-CSRF-Token``: the HMAC of its session cookie, readable by the page from the
   ``climbd_csrf`` cookie or ``GET /api/auth/me`` (OWASP CSRF Prevention Cheat Sheet:
   SameSite=Strict cookies + signed double-submit token + origin verification). Browsers
   cannot add headers to WebSocket handshakes, so those rely on the Origin check (OWASP
   WebSocket Security Cheat Sheet).
5. **Access rule** of the route (``@operation(access=...)``, see
   :mod:`climbd.security.access`): ``401`` if anonymous, ``403`` if the role is too weak.
6. **Signalling rate** for new live connections (``POST /api/whep``, ``GET /api/live``).
7. **Session privacy**: the request runs with the caller's
   :class:`~climbd.security.scope.Viewer`; routes whose ``{id}`` belongs to a session
   (:data:`~climbd.security.access.SESSION_SCOPED`) answer someone else's private session
   exactly like a missing one.

Every response gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin``,
a Content-Security-Policy without ``unsafe-inline`` (``frame-ancestors 'none'``),
``X-Frame-Options: DENY``, COOP/CORP ``same-origin`` and, under ``/api``, ``Cache-Control:
no-store`` — unless the handler set its own value.

Local trust is a deliberate trade-off, documented in THREAT_MODEL.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from aiohttp import web

from climbd.api.keys import AUTH_STORE, CONFIG, DB
from climbd.config import SecurityConfig
from climbd.ids import parse_id
from climbd.security import crypto
from climbd.security.access import (
    ANONYMOUS,
    Principal,
    route_access,
    route_template,
    session_resource,
)
from climbd.security.hosts import (
    HostPolicy,
    is_loopback_address,
    is_loopback_host,
    origin_of,
    split_host,
)
from climbd.security.ratelimit import KeyedLimiter, TokenBucket, client_key
from climbd.security.store import AuthStore
from climbd.visibility import viewing

__all__ = [
    "ADMIN_COOKIE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "DEVICE_COOKIE",
    "PRINCIPAL",
    "SECURITY",
    "SecurityState",
    "install",
    "message_bucket",
    "principal_of",
]

log = logging.getLogger(__name__)

#: HttpOnly cookie of a paired device (random 256-bit token; the database has its SHA-256).
DEVICE_COOKIE = "climbd_device"
#: HttpOnly cookie of an admin session.
ADMIN_COOKIE = "climbd_admin"
#: Readable cookie with the CSRF token of the session cookie(s) (double submit).
CSRF_COOKIE = "climbd_csrf"
#: Request header that must echo the CSRF token on state-changing cookie requests.
CSRF_HEADER = "X-CSRF-Token"
#: Methods that change nothing (RFC 9110 §9.2.1); everything else needs CSRF protection.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: (method, route template) of requests that open a live connection (signalling limit).
SIGNALLING: frozenset[tuple[str, str]] = frozenset({("POST", "/api/whep"),
                                                    ("GET", "/api/live")})
#: Content-Security-Policy of the web UI (CSP Level 3). ``{ws}`` becomes the request's own
#: ``ws://host wss://host``, since older Safari does not let ``'self'`` cover WebSockets.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self' {ws}; font-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Seconds between two log lines about refused requests of one kind.
LOG_EVERY_S = 10.0

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("climbd_principal", Principal)
_COOKIE_CHANGES: web.RequestKey[list[tuple[str, str | None]]] = web.RequestKey(
    "climbd_cookie_changes", list)


@dataclass
class SecurityState:
    """Per-application security state (limiters, credential store), built on first use from
    the daemon's ``security`` config."""

    config: SecurityConfig | None = None
    hosts: HostPolicy | None = None
    store: AuthStore | None = None
    api: KeyedLimiter | None = None
    signalling: KeyedLimiter | None = None
    auth: KeyedLimiter | None = None
    auth_global: TokenBucket | None = None
    kdf_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _logged: dict[str, float] = field(default_factory=dict)

    def ensure(self, app: web.Application) -> SecurityConfig:
        """Build the state from the daemon's config if not done yet; return the config."""
        if self.config is not None:
            return self.config
        config = app.get(CONFIG)
        cfg = config.security if config is not None else SecurityConfig()
        self.hosts = HostPolicy.from_config(cfg.allowed_hosts)
        self.api = KeyedLimiter(cfg.api_requests_per_s, cfg.api_burst)
        self.signalling = KeyedLimiter(cfg.signalling_per_min / 60.0, cfg.signalling_burst)
        self.auth = KeyedLimiter(cfg.auth_attempts_per_min / 60.0, cfg.auth_attempts_per_min)
        self.auth_global = TokenBucket(cfg.auth_attempts_global_per_min / 60.0,
                                       cfg.auth_attempts_global_per_min, time.monotonic())
        self.store = app.get(AUTH_STORE)  # built by the daemon (None: nobody is paired)
        self.config = cfg
        return cfg

    async def auth_store(self) -> AuthStore | None:
        """The loaded credential store (None for an app without a database)."""
        if self.store is not None:
            await self.store.load()
        return self.store

    def auth_attempt(self, request: web.Request) -> float:
        """Spend one pairing/login attempt of this client and of everyone: 0.0 if allowed,
        else the seconds to wait."""
        assert self.auth is not None and self.auth_global is not None
        key = client_key(request.remote)
        wait = self.auth.take(key)
        if wait:
            return wait
        now = time.monotonic()
        if not self.auth_global.take(now):
            self.auth.refund(key)
            return self.auth_global.retry_after(now)
        return 0.0

    def auth_succeeded(self, request: web.Request) -> None:
        """Give back the attempt of a successful pairing/login."""
        assert self.auth is not None and self.auth_global is not None
        self.auth.refund(client_key(request.remote))
        self.auth_global.refund(time.monotonic())

    def note(self, kind: str, message: str, *args: Any) -> None:
        """Log a refusal, at most once per LOG_EVERY_S per kind."""
        now = time.monotonic()
        if now - self._logged.get(kind, -math.inf) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.warning(message, *args)


SECURITY: web.AppKey[SecurityState] = web.AppKey("climbd_security", SecurityState)


def principal_of(request: web.Request) -> Principal:
    """Who made this request (anonymous if the middleware has not run)."""
    return request.get(PRINCIPAL, ANONYMOUS)


def set_cookie(request: web.Request, name: str, value: str | None) -> None:
    """Set (value) or delete (None) a session cookie on this request's response, with the
    CSRF cookie that goes with it."""
    request.setdefault(_COOKIE_CHANGES, []).append((name, value))


def csrf_for_request(request: web.Request) -> str | None:
    """The CSRF token that belongs to the session cookies the client will hold after this
    request (device cookie first, else admin cookie), or None."""
    changes = dict(request.get(_COOKIE_CHANGES, []))
    cookies = {k: changes[k] if k in changes else request.cookies.get(k)
               for k in (DEVICE_COOKIE, ADMIN_COOKIE)}
    primary = cookies[DEVICE_COOKIE] or cookies[ADMIN_COOKIE]
    return crypto.csrf_token(primary) if primary else None


def message_bucket(app: web.Application) -> TokenBucket:
    """A new bucket for one WebSocket or data-channel connection
    (``security.messages_per_s``, ``security.messages_burst``): call ``take(now)`` for each
    message received and drop (or answer with an error) when it returns False."""
    cfg = app[SECURITY].ensure(app)
    return TokenBucket(cfg.messages_per_s, cfg.messages_burst, time.monotonic())


# -- responses -----------------------------------------------------------------------------
def _refuse(status: int, error: str, message: str,
            headers: dict[str, str] | None = None) -> web.Response:
    from climbd.api.app import error_response

    resp = error_response(status, error, message)
    resp.headers.update(headers or {})
    return resp


def _unauthorized(message: str, bearer_error: str | None = None) -> web.Response:
    challenge = 'Bearer realm="climbd"'
    if bearer_error:
        challenge += f', error="{bearer_error}"'
    return _refuse(401, "unauthorized", message, {"WWW-Authenticate": challenge})


def _too_many(wait: float, message: str) -> web.Response:
    return _refuse(429, "too_many_requests", message,
                   {"Retry-After": str(max(1, math.ceil(wait)))})


# -- checks --------------------------------------------------------------------------------
def cross_origin(request: web.Request, host: str, port: int | None) -> bool | None:
    """True if a browser says the request comes from another origin, False if it says it
    comes from this one, None if nothing says (a non-browser client)."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    scheme = "https" if request.secure else "http"
    own = (scheme, host, port if port is not None else (443 if scheme == "https" else 80))
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value is not None:
            return origin_of(value) != own
    if fetch_site == "same-origin":
        return False
    return None


async def _authenticate(state: SecurityState, request: web.Request, cfg: SecurityConfig,
                        trusted: bool) -> Principal | web.Response:
    store = await state.auth_store()
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return _unauthorized("only 'Authorization: Bearer <API token>' is accepted",
                                 "invalid_request")
        token = store.token_for(credentials) if store is not None else None
        if token is None:
            assert state.auth is not None
            wait = state.auth.take(client_key(request.remote))
            state.note("bad-token", "refused an unknown API token from %s", request.remote)
            if wait:
                return _too_many(wait, "too many bad API tokens; wait")
            return _unauthorized("unknown or revoked API token", "invalid_token")
        assert store is not None
        await store.touch_token(token)
        return Principal("token", "bearer", token=token)
    device = admin = None
    if store is not None:
        device_cookie = request.cookies.get(DEVICE_COOKIE)
        device = store.device_for(device_cookie)
        if device_cookie and device is None:
            set_cookie(request, DEVICE_COOKIE, None)  # unpaired meanwhile: forget it
        admin_cookie = request.cookies.get(ADMIN_COOKIE)
        admin = store.admin_session_valid(admin_cookie, cfg.admin_idle_timeout_s)
        if admin_cookie and not admin:
            set_cookie(request, ADMIN_COOKIE, None)
        if device is not None:
            before = device.last_seen_at
            await store.touch_device(device)
            fresh = store.device(device.id)
            if fresh is not None and fresh.last_seen_at != before and device_cookie:
                set_cookie(request, DEVICE_COOKIE, device_cookie)  # slide the expiry
    if admin:
        return Principal("admin", "cookie", device=device)
    if device is not None:
        return Principal("wall", "cookie", device=device)
    if trusted:
        return Principal("admin", "loopback")
    return ANONYMOUS


async def _check_session(request: web.Request, state: SecurityState, template: str) -> (
        web.Response | None):
    """Refuse (as not found) a route whose ``{id}`` belongs to a session the caller may
    not see."""
    kind = session_resource(template)
    raw = request.match_info.get("id", "")
    ident = parse_id(raw)
    if kind is None or ident is None:
        return None  # the handler answers malformed ids itself
    db = request.app.get(DB)
    if db is None or state.store is None:
        return None
    from climbd.errors import SessionNotFound

    if kind == "session":
        await db.get_session(ident)  # SessionNotFound (404) if not visible
        return None
    session_id = await state.store.session_of(kind, ident)
    if session_id is None:
        return None  # the handler answers "no such export/share"
    try:
        await db.get_session(session_id)
    except SessionNotFound:
        from climbd.api.app import error_response
        from climbd.storage.exports import ExportNotFound

        what = "export" if kind == "exports" else "share"
        return error_response(404, "ExportNotFound", str(ExportNotFound(what, ident)))
    return None


@web.middleware
async def security_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """See the module docstring."""
    state = request.app[SECURITY]
    cfg = state.ensure(request.app)
    assert state.hosts is not None and state.api is not None and state.signalling is not None
    parts = split_host(request.headers.get("Host"))
    if parts is None or not state.hosts.allows(parts[0]):
        state.note("host", "refused a request for host %r from %s (security.allowed_hosts)",
                   request.headers.get("Host", "")[:100], request.remote)
        return _refuse(421, "misdirected_request",
                       "this appliance does not answer to that host name "
                       "(see security.allowed_hosts)")
    host, port = parts
    cross = cross_origin(request, host, port)
    trusted = (cfg.loopback_is_trusted and is_loopback_address(request.remote)
               and is_loopback_host(host) and cross is not True)
    client = client_key(request.remote)
    if not trusted:
        wait = state.api.take(client)
        if wait:
            state.note("api-rate", "rate-limiting %s (security.api_requests_per_s)", client)
            return _too_many(wait, "too many requests from this address; slow down")

    principal = await _authenticate(state, request, cfg, trusted)
    if isinstance(principal, web.Response):
        return principal
    request[PRINCIPAL] = principal
    access = route_access(request)
    unsafe = request.method not in SAFE_METHODS
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    if (unsafe or websocket) and cross is True and principal.via != "bearer":
        state.note("cross-origin", "refused a cross-origin %s %s from %s (Origin %r)",
                   request.method, request.path, request.remote,
                   request.headers.get("Origin", "")[:100])
        return _refuse(403, "cross_origin", "requests from another web origin are refused")
    if unsafe and principal.via == "cookie":
        values = [v for v in (request.cookies.get(DEVICE_COOKIE),
                              request.cookies.get(ADMIN_COOKIE)) if v]
        if not crypto.csrf_matches(request.headers.get(CSRF_HEADER), values):
            return _refuse(403, "csrf_token",
                           f"missing or wrong {CSRF_HEADER} header (copy the {CSRF_COOKIE} "
                           "cookie or csrf_token of GET /api/auth/me)")
    if not principal.may(access):
        if principal.role == "anonymous":
            return _unauthorized("pair this device or log in first (see /pair)")
        return _refuse(403, "forbidden", f"this needs the {access} role "
                       f"(you are {principal.role})")
    template = route_template(request)
    if template is not None and (request.method, template) in SIGNALLING and not trusted:
        wait = state.signalling.take(client)
        if wait:
            state.note("signalling", "rate-limiting live connections from %s", client)
            return _too_many(wait, "too many new live connections; wait")

    with viewing(principal.viewer):
        if template is not None and access != "share token" and not principal.viewer.sees_all:
            refused = await _check_session(request, state, template)
            if refused is not None:
                return refused
        return await handler(request)


# -- response headers ----------------------------------------------------------------------
async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    host = request.headers.get("Host", "")
    parts = split_host(host)
    ws = f"ws://{host} wss://{host}" if parts is not None else ""
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Content-Security-Policy", CSP.format(ws=ws).replace("  ", " "))
    if request.path.startswith("/api/"):
        h.setdefault("Cache-Control", "no-store")
    changes = request.get(_COOKIE_CHANGES)
    if not changes:
        return
    cfg = request.app[SECURITY].ensure(request.app)
    secure = request.secure
    max_age = int(cfg.device_cookie_max_age_s)
    # aiohttp has already turned response.cookies into headers when this signal runs
    for name, value in dict(changes).items():
        _add_cookie(h, name, value, max_age if name == DEVICE_COOKIE else None, secure, True)
    _add_cookie(h, CSRF_COOKIE, csrf_for_request(request), max_age, secure, False)


def _add_cookie(headers: Any, name: str, value: str | None, max_age: int | None,
                secure: bool, httponly: bool) -> None:
    """Append a ``Set-Cookie`` (RFC 6265 §4.1; SameSite=Strict, RFC 6265bis §4.1.2.7);
    ``value=None`` deletes the cookie."""
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value or ""
    morsel = jar[name]
    morsel["path"] = "/"
    morsel["samesite"] = "Strict"
    if httponly:
        morsel["httponly"] = True
    if secure:
        morsel["secure"] = True
    if value is None:
        morsel["max-age"] = 0
        morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    elif max_age is not None:
        morsel["max-age"] = max_age
    headers.add("Set-Cookie", morsel.OutputString())


async def _announce(app: web.Application) -> None:
    """At start-up: on a fresh appliance, log a device pairing code and an admin setup code
    (valid ``security.pairing_code_ttl_s``) so the owner can get in from the journal."""
    state = app[SECURITY]
    cfg = state.ensure(app)
    store = await state.auth_store()
    if store is None:
        return
    minutes = cfg.pairing_code_ttl_s / 60
    if not store.admin_configured:
        code, _ = await store.create_code("admin", cfg.pairing_code_ttl_s, "startup")
        log.warning("no admin password yet: set one at /pair with admin code %s (valid %.0f "
                    "min; `climbd pair --admin` makes a new one), or from this machine",
                    crypto.format_code(code), minutes)
    if not store.devices():
        code, _ = await store.create_code("device", cfg.pairing_code_ttl_s, "startup")
        log.warning("no paired device yet: open /pair on the wall tablet and enter %s (valid "
                    "%.0f min; `climbd pair` makes a new one)", crypto.format_code(code),
                    minutes)


def install(app: web.Application) -> None:
    """Add the security middleware (inside the error middleware), response headers and the
    start-up announcement to ``app`` (before it is frozen)."""
    app[SECURITY] = SecurityState()
    app.middlewares.append(security_middleware)
    app.on_response_prepare.append(_on_prepare)
    app.on_startup.append(_announce)
