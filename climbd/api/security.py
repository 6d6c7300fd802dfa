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
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Literal

from aiohttp import web

from climbd.api.keys import AUTH_STORE, CONFIG, DB, LIVE
from climbd.config import SecurityConfig
from climbd.ids import parse_id
from climbd.security import crypto
from climbd.security.access import (
    ACCESS_RANK,
    ANONYMOUS,
    SCOPE_ROLE,
    Principal,
    session_resource,
)
from climbd.security.connections import LiveConnections, TooManyLive, owner_key
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

AttemptKind = Literal["pairing", "login", "cli-code"]

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
    "route_access",
    "route_template",
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
                                                    ("POST", "/api/whep/delayed"),
                                                    ("GET", "/api/live")})
#: Content-Security-Policy of the web UI (CSP Level 3). ``{ws}`` becomes the request's own
#: ``ws://host wss://host``, since older Safari does not let ``'self'`` cover WebSockets.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self' {ws}; font-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Seconds between two log lines about refused requests of one kind.
LOG_EVERY_S = 10.0

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("climbd_principal", Principal)
CLIENT: web.RequestKey[str] = web.RequestKey("climbd_client", str)
_COOKIE_CHANGES: web.RequestKey[list[tuple[str, str | None]]] = web.RequestKey(
    "climbd_cookie_changes", list)


def route_template(request: web.Request) -> str | None:
    """The matched route's template (``/api/sessions/{id}``), or None if nothing matched."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    resource = match.route.resource
    if resource is None:
        return None
    info = resource.get_info()
    return info.get("formatter") or info.get("path") or info.get("prefix")


def route_access(request: web.Request) -> str:
    """The access value that applies to ``request``'s route.

    Unmatched requests are ``anonymous`` (aiohttp answers 404/405 by itself). Routes without
    a declared value are ``admin`` under ``/api`` and for decorated handlers, ``anonymous``
    for undecorated non-API routes (the static web UI).
    """
    match = request.match_info
    if match.http_exception is not None:
        return "anonymous"
    op = getattr(match.handler, "__openapi__", None)
    access = getattr(op, "access", None)
    if access is not None:
        if access not in ACCESS_RANK:
            return "admin"
        return str(access)
    template = route_template(request) or request.path
    if op is not None or template.startswith("/api"):
        return "admin"
    return "anonymous"



@dataclass
class SecurityState:
    """Per-application security state (limiters, credential store, live connections),
    built on first use from the daemon's ``security`` config.

    Attempt budgets are separate, so a flood of one kind cannot lock out another:

    - ``pairing``: guesses of 8-digit codes (made on a paired screen or in the journal):
      per client and globally (``security.auth_attempts_per_min`` / ``_global_per_min``);
    - ``login``: admin password attempts, per client; anonymous clients together share
      ``security.login_attempts_global_per_min``, each paired device has its own budget;
    - ``cli-code``: the 12-digit codes of ``climbd pair`` (per client only: with 10^12
      values no global budget is needed, see THREAT_MODEL.md), so a pairing-code flood never
      blocks a fresh code from the CLI;
    - ``bad-token``: unknown bearer tokens, per client.
    """

    config: SecurityConfig | None = None
    hosts: HostPolicy | None = None
    store: AuthStore | None = None
    api: KeyedLimiter | None = None
    signalling: KeyedLimiter | None = None
    budgets: dict[str, KeyedLimiter] = field(default_factory=dict)
    globals: dict[str, TokenBucket] = field(default_factory=dict)
    proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    kdf_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: open live connections (WebSockets, WHEP peers) per owner, closed on unpair/revoke
    live: LiveConnections = field(default_factory=lambda: LiveConnections())
    _logged: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def ensure(self, app: web.Application) -> SecurityConfig:
        """Build the state from the daemon's config if not done yet; return the config."""
        if self.config is not None:
            return self.config
        config = app.get(CONFIG)
        cfg = config.security if config is not None else SecurityConfig()
        self.hosts = HostPolicy.from_config(cfg.allowed_hosts)
        self.api = KeyedLimiter(cfg.api_requests_per_s, cfg.api_burst)
        self.signalling = KeyedLimiter(cfg.signalling_per_min / 60.0, cfg.signalling_burst)
        per_client = cfg.auth_attempts_per_min
        for kind in ("pairing", "login", "login-device", "cli-code", "bad-token"):
            self.budgets[kind] = KeyedLimiter(per_client / 60.0, per_client)
        now = time.monotonic()
        self.globals["pairing"] = TokenBucket(cfg.auth_attempts_global_per_min / 60.0,
                                              cfg.auth_attempts_global_per_min, now)
        self.globals["login"] = TokenBucket(cfg.login_attempts_global_per_min / 60.0,
                                            cfg.login_attempts_global_per_min, now)
        self.proxies = tuple(ip_network(p, strict=False) for p in cfg.trusted_proxies)
        self.live.per_owner = {"ws": cfg.max_websockets_per_device,
                               "whep": cfg.max_viewers_per_device}
        self.store = app.get(AUTH_STORE)  # built by the daemon (None: nobody is paired)
        self.config = cfg
        return cfg

    async def auth_store(self) -> AuthStore | None:
        """The loaded credential store (None for an app without a database)."""
        if self.store is not None:
            await self.store.load()
        return self.store

    def attempt(self, request: web.Request, kind: AttemptKind) -> float:
        """Spend one attempt of ``kind`` ('pairing', 'login', 'cli-code') for this client
        (and from the kind's global budget, if it has one): 0.0 if allowed, else the seconds
        to wait. A paired device's admin logins use its own budget, not the anonymous one."""
        principal = principal_of(request)
        if kind == "login" and principal.device is not None:
            return self.budgets["login-device"].take(f"device {principal.device.id}")
        key = client_key(client_address(request))
        wait = self.budgets[kind].take(key)
        if wait:
            return wait
        bucket = self.globals.get(kind)
        now = time.monotonic()
        if bucket is not None and not bucket.take(now):
            self.budgets[kind].refund(key)
            return bucket.retry_after(now)
        return 0.0

    def succeeded(self, request: web.Request, kind: AttemptKind) -> None:
        """Give back the attempt of a successful pairing/login."""
        principal = principal_of(request)
        if kind == "login" and principal.device is not None:
            self.budgets["login-device"].refund(f"device {principal.device.id}")
            return
        self.budgets[kind].refund(client_key(client_address(request)))
        bucket = self.globals.get(kind)
        if bucket is not None:
            bucket.refund(time.monotonic())

    def note(self, kind: str, message: str, *args: Any) -> None:
        """Log a refusal, at most once per LOG_EVERY_S per kind (with how many were not
        logged since)."""
        now = time.monotonic()
        if now - self._logged.get(kind, -math.inf) >= LOG_EVERY_S:
            self._logged[kind] = now
            skipped = self._suppressed.pop(kind, 0)
            if skipped:
                message += f" ({skipped} more like it not logged)"
            log.warning(message, *args)
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1


SECURITY: web.AppKey[SecurityState] = web.AppKey("climbd_security", SecurityState)


def principal_of(request: web.Request) -> Principal:
    """Who made this request (anonymous if the middleware has not run)."""
    return request.get(PRINCIPAL, ANONYMOUS)


def client_address(request: web.Request) -> str | None:
    """The client's IP address: the peer, or — when the peer is a configured
    ``security.trusted_proxies`` entry — the address that proxy reports."""
    return request.get(CLIENT) or request.remote


def _in(address: str | None, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def forwarded_client(remote: str | None, header: str | None,
                     proxies: tuple[IPv4Network | IPv6Network, ...]) -> str | None:
    """The client address a trusted proxy reports in ``X-Forwarded-For``: the right-most
    entry that is not itself a trusted proxy (entries further left are the client's own
    claims). None if ``remote`` is not a trusted proxy or the header has no valid address.
    """
    if not _in(remote, proxies) or not header:
        return None
    for entry in reversed(header[:2048].split(",")):
        entry = entry.strip()
        try:
            ip_address(entry)
        except ValueError:
            return None
        if not _in(entry, proxies):
            return entry
    return None


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
            client = client_address(request)
            wait = state.budgets["bad-token"].take(client_key(client))
            state.note("bad-token", "refused an unknown API token from %s", client)
            if wait:
                return _too_many(wait, "too many bad API tokens; wait")
            return _unauthorized("unknown or revoked API token", "invalid_token")
        assert store is not None
        await store.touch_token(token)
        return Principal(SCOPE_ROLE.get(token.scope, "token"), "bearer", token=token)
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
                   request.headers.get("Host", "")[:100], client_address(request))
        return _refuse(421, "misdirected_request",
                       "this appliance does not answer to that host name "
                       "(see security.allowed_hosts)")
    host, port = parts
    cross = cross_origin(request, host, port)
    forwarded = forwarded_client(request.remote, request.headers.get("X-Forwarded-For"),
                                 state.proxies)
    if forwarded is not None:
        request[CLIENT] = forwarded
    via_proxy = _in(request.remote, state.proxies) or any(
        h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP"))
    # Opt-in only (off by default): never for a proxied request, whatever its headers say.
    trusted = (cfg.loopback_is_trusted and not via_proxy
               and is_loopback_address(request.remote)
               and is_loopback_host(host) and cross is not True)
    client = client_key(client_address(request))
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
                   request.method, request.path[:100], client_address(request),
                   request.headers.get("Origin", "")[:100])
        return _refuse(403, "cross_origin", "requests from another web origin are refused")
    if unsafe and principal.via == "cookie":
        values = [v for v in (request.cookies.get(DEVICE_COOKIE),
                              request.cookies.get(ADMIN_COOKIE)) if v]
        if not crypto.csrf_matches(request.headers.get(CSRF_HEADER), values):
            return _refuse(403, "csrf_token",
                           f"missing or wrong {CSRF_HEADER} header (copy the {CSRF_COOKIE} "
                           "cookie or csrf_token of GET /api/auth/me)")
    template = route_template(request)
    if not principal.may(access, request.method, template):
        if principal.role == "anonymous":
            return _unauthorized("pair this device or log in first (see /pair)")
        scope = f", token scope {principal.token.scope}" if principal.token else ""
        return _refuse(403, "forbidden", f"this needs the {access} role "
                       f"(you are {principal.role}{scope})")
    if (template is not None and (request.method, template) in SIGNALLING
            and principal.role != "admin"):  # the admin may open what it likes
        wait = state.signalling.take(client)
        if wait:
            state.note("signalling", "rate-limiting live connections from %s", client)
            return _too_many(wait, "too many new live connections; wait")

    with viewing(principal.viewer):
        if template is not None and access != "share token" and not principal.viewer.sees_all:
            refused = await _check_session(request, state, template)
            if refused is not None:
                return refused
        if template is not None and (request.method, template) in SIGNALLING:
            return await _live(request, state, principal, template, websocket, handler)
        return await handler(request)


async def _live(request: web.Request, state: SecurityState, principal: Principal,
                template: str, websocket: bool,
                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """Open a live connection for ``principal``: refuse it beyond the per-device cap, and
    register how to close it when the device is unpaired or the token revoked."""
    owner = owner_key(*principal.owner)
    kind: Literal["ws", "whep"] = "ws" if template == "/api/live" else "whep"
    try:
        state.live.check(owner, kind)
    except TooManyLive as exc:
        state.note(f"live-cap-{kind}", "refused a live connection of %s: %s", owner, exc)
        return _refuse(429, "too_many_live_connections", str(exc), {"Retry-After": "5"})
    if kind == "ws":
        if not websocket:
            return await handler(request)
        transport = request.transport

        async def close_socket() -> None:
            if transport is not None:
                transport.close()  # the WebSocket ends at once, whatever it was doing

        handle = state.live.register(
            owner, "ws", close_socket,
            alive=lambda: transport is not None and not transport.is_closing())
        try:
            return await handler(request)
        finally:
            state.live.unregister(owner, handle)
    response = await handler(request)
    endpoint = request.app.get(LIVE)
    location = response.headers.get("Location", "")
    if response.status == 201 and endpoint is not None and location.startswith("/api/whep/"):
        viewer_id = location.rsplit("/", 1)[1]

        async def close_viewer() -> None:
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                await endpoint.delete(viewer_id)

        def viewer_alive() -> bool:
            try:
                endpoint.get(viewer_id)
            except Exception:
                return False
            return True

        try:
            state.live.register(owner, "whep", close_viewer, alive=viewer_alive)
        except TooManyLive as exc:  # another offer of this owner won the race
            await close_viewer()
            return _refuse(429, "too_many_live_connections", str(exc), {"Retry-After": "5"})
    return response


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
                    "min; `climbd pair --admin` makes a new one, `climbd admin-password` sets it)",
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
