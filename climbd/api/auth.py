"""``/api/auth``: pairing, admin login, paired devices, API tokens; session privacy; the
``/pair`` page. :func:`add_routes` also installs the security layer
(:mod:`climbd.api.security`) these routes belong to.

Flows (details and trade-offs in THREAT_MODEL.md):

- **Pair a tablet**: a code from ``climbd pair``, from the journal at first start, or from
  an already paired screen (``POST /api/auth/pairing-codes``) is typed on the new tablet at
  ``/pair`` -> ``POST /api/auth/pair`` -> the tablet gets an HttpOnly device cookie.
- **Admin**: the first password (or PIN, at least 8 characters) is set at ``/pair`` with an
  admin code (from the journal at first start, or ``climbd pair --admin``, which also resets
  a forgotten password) -> ``POST /api/auth/admin/setup``, or on the appliance with
  ``climbd admin-password`` (the local admin socket); later ``POST /api/auth/admin/login``.
  An admin session ends after ``security.admin_idle_timeout_s``
  idle or ``security.admin_session_max_s``.
- **API tokens** (``Authorization: Bearer climbd_...``) with a scope (``trigger``, ``read``,
  ``viewer``), made by the admin here or with ``climbd token create`` on the appliance.
  Revoking a token or unpairing a device closes its live connections at once.
- **Private sessions**: ``PUT /api/sessions/{id}/privacy`` by the owner device (the one
  that started the recording) or the admin; sessions of the box (GPIO, hands-free, API
  tokens, ingest) only by the admin.

Pairing-code guesses, admin logins and ``climbd pair`` codes have separate attempt budgets
(:class:`climbd.api.security.SecurityState`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from climbd.api.app import error_response
from climbd.api.ids import session_id as _session_id
from climbd.api.keys import DB
from climbd.api.openapi import operation
from climbd.api.schemas import ErrorBody
from climbd.api.security import (
    ADMIN_COOKIE,
    CSRF_HEADER,
    DEVICE_COOKIE,
    SECURITY,
    AttemptKind,
    SecurityState,
    client_address,
    csrf_for_request,
    install,
    principal_of,
    set_cookie,
)
from climbd.ids import parse_id
from climbd.security import crypto
from climbd.security.connections import owner_key
from climbd.security.store import NAME_MAX, AuthStore, Device

__all__ = ["add_routes"]

log = logging.getLogger(__name__)

#: Largest body of an auth request, bytes (a code, a name, a password).
MAX_AUTH_BODY = 4096
_STATIC = Path(__file__).resolve().parent.parent / "security" / "static"
_ERR = ("Error", ErrorBody)
_429 = ("Too many attempts (Retry-After)", ErrorBody)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairRequest(_In):
    """``POST /api/auth/pair``."""

    code: str = Field(max_length=32, description="The 8-digit code, dashes/spaces allowed")
    name: str = Field("", max_length=NAME_MAX, description="A name for this device")


class PairingCodeOut(BaseModel):
    """A new pairing code (shown once)."""

    code: str
    expires_at: float
    ttl_s: float


class AdminSetupRequest(_In):
    """``POST /api/auth/admin/setup``: the first admin password, or a reset with a code."""

    password: str = Field(max_length=4 * crypto.PASSWORD_MAX)
    code: str | None = Field(None, max_length=32,
                             description="Admin code from `climbd pair --admin`")


class LoginRequest(_In):
    """``POST /api/auth/admin/login``."""

    password: str = Field(max_length=4 * crypto.PASSWORD_MAX)


class PasswordChange(_In):
    """``PUT /api/auth/admin/password``."""

    current: str = Field("", max_length=4 * crypto.PASSWORD_MAX,
                         description="The current password (the admin socket resets it "
                         "without: `climbd admin-password`)")
    new: str = Field(max_length=4 * crypto.PASSWORD_MAX)


class DeviceOut(BaseModel):
    """A paired device (times in Unix seconds)."""

    id: int
    name: str
    created_at: float
    last_seen_at: float
    user_agent: str
    current: bool = Field(False, description="It is the device making this request")


class DeviceList(BaseModel):
    """Paired devices, oldest first."""

    items: list[DeviceOut]


class DevicePatch(_In):
    """``PATCH /api/auth/devices/{id}``."""

    name: str = Field(min_length=1, max_length=NAME_MAX)


class TokenRequest(_In):
    """``POST /api/auth/tokens``."""

    name: str = Field(min_length=1, max_length=NAME_MAX,
                      description="What uses it, e.g. 'big red button'")
    scope: Literal["trigger", "read", "viewer"] = Field(
        "trigger", description="trigger: recording triggers; read: read-only; viewer: read "
        "and the live view. Admin tokens are made only on the appliance (`climbd token "
        "create --scope admin`)")


class TokenInfo(BaseModel):
    """An API token (never its secret)."""

    id: int
    name: str
    created_at: float
    last_used_at: float | None
    scope: str


class TokenCreated(TokenInfo):
    """A new API token: ``token`` is shown this once."""

    token: str


class TokenList(BaseModel):
    """API tokens, oldest first."""

    items: list[TokenInfo]


class MeOut(BaseModel):
    """Who the caller is, and what the web UI needs to know."""

    role: Literal["anonymous", "token", "wall", "admin"]
    via: Literal["none", "cookie", "bearer", "loopback", "local"]
    scope: str | None = Field(None, description="The API token's scope, if one is used")
    device: DeviceOut | None
    admin_configured: bool
    csrf_token: str | None = Field(None, description=f"Send it as {CSRF_HEADER} on POST, "
                                   "PUT, PATCH and DELETE")
    csrf_header: str = CSRF_HEADER


class PrivacyRequest(_In):
    """``PUT /api/sessions/{id}/privacy``."""

    private: bool
    owner_device_id: int | None = Field(
        None, description="Admin only: the owner device (default: the caller's device, or "
        "the current owner)")


class PrivacyOut(BaseModel):
    """A session's privacy."""

    session_id: int
    private: bool
    owner_device_id: int | None


# -- helpers -------------------------------------------------------------------------------
def _state(request: web.Request) -> SecurityState:
    return request.app[SECURITY]


async def _store(request: web.Request) -> AuthStore:
    store = await _state(request).auth_store()
    if store is None:
        raise web.HTTPServiceUnavailable(text="access control is not available")
    return store


def _code_budget(typed: str) -> AttemptKind:
    """Which attempt budget a typed code is guessed under: 12-digit codes (``climbd pair``)
    have their own (see :class:`climbd.api.security.SecurityState`)."""
    code = crypto.normalize_code(typed)
    return "cli-code" if code is not None and len(code) == crypto.CLI_CODE_DIGITS else "pairing"


async def cut_off(request: web.Request, device_id: int | None = None,
                  token_id: int | None = None) -> None:
    """Close the live connections (WebSockets, WHEP peers) of an unpaired device or a
    revoked token."""
    key = owner_key(device_id, token_id)
    if key is not None:
        await _state(request).live.cut_off(key)


def _too_many(wait: float) -> web.Response:
    resp = error_response(429, "too_many_attempts", "too many attempts; wait and try again")
    resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return resp


def _device_out(device: Device, request: web.Request) -> dict[str, Any]:
    me = principal_of(request).device
    return DeviceOut(**device.to_dict(), current=me is not None and me.id == device.id
                     ).model_dump()


def _int_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    ident = parse_id(raw)
    if ident is None:
        raise web.HTTPNotFound(text=f"no such id {raw[:40]!r}")
    return ident


async def _kdf(request: web.Request, fn: Any, *args: Any) -> Any:
    """Run a slow scrypt call in a thread, one at a time (bounded CPU and memory)."""
    async with _state(request).kdf_lock:
        return await asyncio.to_thread(fn, *args)


# -- who am I ------------------------------------------------------------------------------
@operation("Who is calling: role, device, CSRF token", tags=("auth",),
           responses={200: ("The caller", MeOut)}, access="anonymous")
async def me(request: web.Request) -> web.Response:
    """``GET /api/auth/me``."""
    p = principal_of(request)
    store = await _state(request).auth_store()
    return web.json_response(MeOut(
        role=p.role, via=p.via, scope=p.token.scope if p.token else None,
        device=DeviceOut(**p.device.to_dict(), current=True) if p.device else None,
        admin_configured=bool(store and store.admin_configured),
        csrf_token=csrf_for_request(request) if p.via == "cookie" else None,
    ).model_dump())


# -- pairing -------------------------------------------------------------------------------
@operation("Pair this device with a code (sets the device cookie)", tags=("auth",),
           request=PairRequest, max_body=MAX_AUTH_BODY,
           responses={201: ("Paired", MeOut), 403: ("Wrong or expired code", ErrorBody),
                      422: ("Invalid body", ErrorBody), 429: _429},
           access="anonymous")
async def pair(request: web.Request, body: PairRequest) -> web.Response:
    """``POST /api/auth/pair``."""
    state = _state(request)
    store = await _store(request)
    budget = _code_budget(body.code)
    wait = state.attempt(request, budget)
    if wait:
        state.note(f"{budget}-rate", "pairing attempts from %s are rate-limited",
                   client_address(request))
        return _too_many(wait)
    if not await store.redeem_code("device", body.code):
        state.note("bad-code", "wrong or expired pairing code from %s", client_address(request))
        return error_response(403, "invalid_code", "wrong or expired code")
    state.succeeded(request, budget)
    device, token = await store.pair_device(body.name, request.headers.get("User-Agent", ""))
    set_cookie(request, DEVICE_COOKIE, token)
    log.warning("paired device %d %r from %s", device.id, device.name, client_address(request))
    return web.json_response(MeOut(
        role="admin" if principal_of(request).via == "cookie" and principal_of(request).role
        == "admin" else "wall", via="cookie",
        device=DeviceOut(**device.to_dict(), current=True),
        admin_configured=store.admin_configured, csrf_token=csrf_for_request(request),
    ).model_dump(), status=201)


@operation("A new single-use code to pair another device (show it on this screen)",
           tags=("auth",), responses={201: ("The code", PairingCodeOut)}, access="wall")
async def create_pairing_code(request: web.Request) -> web.Response:
    """``POST /api/auth/pairing-codes``."""
    store = await _store(request)
    ttl = _state(request).ensure(request.app).pairing_code_ttl_s
    p = principal_of(request)
    origin = f"device {p.device.id}" if p.device else p.via
    code, expires = await store.create_code("device", ttl, origin)
    return web.json_response(PairingCodeOut(code=crypto.format_code(code), expires_at=expires,
                                            ttl_s=ttl).model_dump(), status=201)


@operation("Forget this device (its cookie stops working)", tags=("auth",),
           responses={200: ("Unpaired", None)}, access="wall")
async def unpair(request: web.Request) -> web.Response:
    """``POST /api/auth/unpair``."""
    store = await _store(request)
    device = principal_of(request).device
    if device is not None:
        await store.remove_device(device.id)
        set_cookie(request, DEVICE_COOKIE, None)
        await cut_off(request, device_id=device.id)
        log.warning("device %d %r unpaired itself", device.id, device.name)
    return web.json_response({"unpaired": device.id if device else None})


# -- admin ---------------------------------------------------------------------------------
@operation("Set the admin password with an admin code (first run: from the journal; a reset: "
           "from `climbd pair --admin`)", tags=("auth",),
           request=AdminSetupRequest, max_body=MAX_AUTH_BODY,
           responses={201: ("Password set; logged in as admin", MeOut),
                      403: ("No code or a wrong code", ErrorBody),
                      422: ("Password too short or too long", ErrorBody), 429: _429},
           access="anonymous")
async def admin_setup(request: web.Request, body: AdminSetupRequest) -> web.Response:
    """``POST /api/auth/admin/setup``."""
    state = _state(request)
    store = await _store(request)
    try:
        crypto.check_password_rules(body.password)
    except ValueError as exc:
        return error_response(422, "weak_password", str(exc))
    if body.code is None:
        return error_response(403, "code_required",
                              "an admin code is needed: run `climbd pair --admin` on the "
                              "appliance (or look for it in the journal at first start), or "
                              "set the password there with `climbd admin-password`")
    budget = _code_budget(body.code)
    wait = state.attempt(request, budget)
    if wait:
        return _too_many(wait)
    if not await store.redeem_code("admin", body.code):
        state.note("bad-code", "wrong or expired admin code from %s", client_address(request))
        return error_response(403, "invalid_code", "wrong or expired admin code")
    state.succeeded(request, budget)
    digest = await _kdf(request, crypto.hash_password, body.password)
    await store.set_admin_password_hash(digest)
    await _login(request, store)
    log.warning("admin password set from %s", client_address(request))
    return await _me_response(request, store, 201)


async def _login(request: web.Request, store: AuthStore) -> None:
    cfg = _state(request).ensure(request.app)
    token = await store.create_admin_session(cfg.admin_session_max_s)
    set_cookie(request, ADMIN_COOKIE, token)


async def _me_response(request: web.Request, store: AuthStore, status: int) -> web.Response:
    device = principal_of(request).device
    return web.json_response(MeOut(
        role="admin", via="cookie",
        device=DeviceOut(**device.to_dict(), current=True) if device else None,
        admin_configured=True, csrf_token=csrf_for_request(request)).model_dump(),
        status=status)


@operation("Log in as the admin (sets the admin session cookie)", tags=("auth",),
           request=LoginRequest, max_body=MAX_AUTH_BODY,
           responses={200: ("Logged in", MeOut), 403: ("Wrong password", ErrorBody),
                      409: ("No admin password set yet", ErrorBody), 429: _429},
           access="anonymous")
async def admin_login(request: web.Request, body: LoginRequest) -> web.Response:
    """``POST /api/auth/admin/login``."""
    state = _state(request)
    store = await _store(request)
    stored = store.admin_password_hash
    if stored is None:
        return error_response(409, "no_admin", "no admin password yet: set one first")
    wait = state.attempt(request, "login")
    if wait:
        state.note("login-rate", "admin logins from %s are rate-limited",
                   client_address(request))
        return _too_many(wait)
    if not await _kdf(request, crypto.verify_password, body.password, stored):
        state.note("bad-password", "wrong admin password from %s", client_address(request))
        return error_response(403, "invalid_password", "wrong password")
    state.succeeded(request, "login")
    await _login(request, store)
    log.info("admin logged in from %s", client_address(request))
    return await _me_response(request, store, 200)


@operation("Change the admin password (every admin session ends)", tags=("auth",),
           request=PasswordChange, max_body=MAX_AUTH_BODY,
           responses={200: ("Changed; this client stays logged in", MeOut),
                      403: ("Wrong current password", ErrorBody),
                      422: ("New password too short or too long", ErrorBody), 429: _429},
           access="admin")
async def change_password(request: web.Request, body: PasswordChange) -> web.Response:
    """``PUT /api/auth/admin/password``."""
    state = _state(request)
    store = await _store(request)
    try:
        crypto.check_password_rules(body.new)
    except ValueError as exc:
        return error_response(422, "weak_password", str(exc))
    stored = store.admin_password_hash
    if stored is not None:
        wait = state.attempt(request, "login")
        if wait:
            return _too_many(wait)
        if not await _kdf(request, crypto.verify_password, body.current, stored):
            return error_response(403, "invalid_password", "wrong current password")
        state.succeeded(request, "login")
    digest = await _kdf(request, crypto.hash_password, body.new)
    await store.set_admin_password_hash(digest)
    await _login(request, store)
    log.warning("admin password changed from %s", client_address(request))
    return await _me_response(request, store, 200)


@operation("Log out of the admin session", tags=("auth",),
           responses={200: ("Logged out", None)}, access="anonymous")
async def logout(request: web.Request) -> web.Response:
    """``POST /api/auth/logout``."""
    store = await _store(request)
    cookie = request.cookies.get(ADMIN_COOKIE)
    if cookie:
        await store.end_admin_session(cookie)
        set_cookie(request, ADMIN_COOKIE, None)
    return web.json_response({"logged_out": bool(cookie)})


# -- devices -------------------------------------------------------------------------------
@operation("Paired devices", tags=("auth",), responses={200: ("Devices", DeviceList)},
           access="admin")
async def list_devices(request: web.Request) -> web.Response:
    """``GET /api/auth/devices``."""
    store = await _store(request)
    return web.json_response({"items": [_device_out(d, request) for d in store.devices()]})


@operation("Rename a paired device", tags=("auth",), request=DevicePatch,
           max_body=MAX_AUTH_BODY,
           responses={200: ("The device", DeviceOut), 404: _ERR, 422: _ERR}, access="admin")
async def rename_device(request: web.Request, body: DevicePatch) -> web.Response:
    """``PATCH /api/auth/devices/{id}``."""
    store = await _store(request)
    device_id = _int_id(request)
    device = await store.rename_device(device_id, body.name)
    if device is None:
        raise web.HTTPNotFound(text=f"no device with id {device_id}")
    return web.json_response(_device_out(device, request))


@operation("Unpair a device (its private sessions stay visible to the admin only)",
           tags=("auth",), responses={200: ("The removed device", DeviceOut), 404: _ERR},
           access="admin")
async def remove_device(request: web.Request) -> web.Response:
    """``DELETE /api/auth/devices/{id}``."""
    store = await _store(request)
    device_id = _int_id(request)
    device = await store.remove_device(device_id)
    if device is None:
        raise web.HTTPNotFound(text=f"no device with id {device_id}")
    await cut_off(request, device_id=device.id)
    log.warning("admin unpaired device %d %r", device.id, device.name)
    return web.json_response(_device_out(device, request))


# -- API tokens ----------------------------------------------------------------------------
@operation("API tokens (never their secrets)", tags=("auth",),
           responses={200: ("Tokens", TokenList)}, access="admin")
async def list_tokens(request: web.Request) -> web.Response:
    """``GET /api/auth/tokens``."""
    store = await _store(request)
    return web.json_response({"items": [t.to_dict() for t in store.tokens()]})


@operation("Make an API token for HTTP triggers (the secret is shown once)", tags=("auth",),
           request=TokenRequest, max_body=MAX_AUTH_BODY,
           responses={201: ("The token", TokenCreated), 422: _ERR},
           access="admin")
async def create_token(request: web.Request, body: TokenRequest) -> web.Response:
    """``POST /api/auth/tokens``."""
    store = await _store(request)
    token, secret = await store.create_token(body.name, body.scope)
    log.warning("API token %d %r (scope %s) created", token.id, token.name, token.scope)
    return web.json_response({**token.to_dict(), "token": secret}, status=201)


@operation("Revoke an API token", tags=("auth",),
           responses={200: ("The revoked token", TokenInfo), 404: _ERR}, access="admin")
async def remove_token(request: web.Request) -> web.Response:
    """``DELETE /api/auth/tokens/{id}``."""
    store = await _store(request)
    token_id = _int_id(request)
    token = await store.remove_token(token_id)
    if token is None:
        raise web.HTTPNotFound(text=f"no API token with id {token_id}")
    await cut_off(request, token_id=token.id)
    return web.json_response(token.to_dict())


# -- session privacy -----------------------------------------------------------------------
@operation("A session's privacy (private sessions: owner device and admin only)",
           tags=("sessions",), responses={200: ("Privacy", PrivacyOut), 404: _ERR},
           access="wall")
async def get_privacy(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/privacy``."""
    rec = await request.app[DB].get_session(_session_id(request))
    return web.json_response(PrivacyOut(session_id=rec.id, private=rec.private,
                                        owner_device_id=rec.owner_device_id).model_dump())


@operation("Make a session private to its owner device (or public again): the device that "
           "recorded it, or the admin", tags=("sessions",), request=PrivacyRequest,
           max_body=MAX_AUTH_BODY,
           responses={200: ("Privacy", PrivacyOut), 403: ("Owned by another device", ErrorBody),
                      404: _ERR, 422: _ERR}, access="wall")
async def set_privacy(request: web.Request, body: PrivacyRequest) -> web.Response:
    """``PUT /api/sessions/{id}/privacy``."""
    store = await _store(request)
    sid = _session_id(request)
    rec = await request.app[DB].get_session(sid)  # 404 if not visible
    p = principal_of(request)
    if p.role == "admin":
        owner = body.owner_device_id if "owner_device_id" in body.model_fields_set else (
            rec.owner_device_id if rec.owner_device_id is not None
            else (p.device.id if p.device else None))
        if owner is not None and store.device(owner) is None:
            return error_response(422, "unknown_device", f"no paired device with id {owner}")
    else:
        me_id = p.device.id if p.device else None
        gives_away = ("owner_device_id" in body.model_fields_set
                      and body.owner_device_id != me_id)
        if me_id is None or gives_away:
            return error_response(403, "forbidden", "only the admin can give a session to "
                                  "another device")
        if rec.owner_device_id != me_id:
            # started by another device, an API token or the box (GPIO, hands-free)
            return error_response(403, "forbidden", "only the device that recorded this "
                                  "session, or the admin, can change its privacy")
        owner = me_id
    await store.set_privacy(sid, private=body.private, owner_device_id=owner)
    return web.json_response(PrivacyOut(session_id=sid, private=body.private,
                                        owner_device_id=owner).model_dump())


# -- the /pair page ------------------------------------------------------------------------
async def pair_page(request: web.Request) -> web.FileResponse:
    """``GET /pair``: pair this tablet, set or enter the admin password."""
    return web.FileResponse(_STATIC / "pair.html",
                            headers={"Content-Type": "text/html; charset=utf-8",
                                     "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Install the security layer and register the ``/api/auth`` routes, the session
    privacy routes and the ``/pair`` page."""
    install(app)
    r = app.router
    r.add_get("/api/auth/me", me, allow_head=False)
    r.add_post("/api/auth/pair", pair)
    r.add_post("/api/auth/pairing-codes", create_pairing_code)
    r.add_post("/api/auth/unpair", unpair)
    r.add_post("/api/auth/admin/setup", admin_setup)
    r.add_post("/api/auth/admin/login", admin_login)
    r.add_put("/api/auth/admin/password", change_password)
    r.add_post("/api/auth/logout", logout)
    r.add_get("/api/auth/devices", list_devices, allow_head=False)
    r.add_patch("/api/auth/devices/{id}", rename_device)
    r.add_delete("/api/auth/devices/{id}", remove_device)
    r.add_get("/api/auth/tokens", list_tokens, allow_head=False)
    r.add_post("/api/auth/tokens", create_token)
    r.add_delete("/api/auth/tokens/{id}", remove_token)
    r.add_get("/api/sessions/{id}/privacy", get_privacy, allow_head=False)
    r.add_put("/api/sessions/{id}/privacy", set_privacy)
    r.add_get("/pair", pair_page)
    r.add_static("/pair/", _STATIC, follow_symlinks=False)
