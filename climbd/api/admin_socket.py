"""The local admin channel: a small JSON API on a Unix socket that only the service user
and root can use. ``climbd token ...``, ``climbd pair`` and ``climbd admin-password`` talk
to it; nothing on the network can.

Two OS checks, both needed (THREAT_MODEL.md, "Local administration"):

1. **File permissions**: the socket is ``<state dir>/admin.sock`` with mode 0600, inside
   the 0750 state directory (``StateDirectoryMode`` in ``systemd/climbd.service``); other
   local users cannot even reach it.
2. **SO_PEERCRED** (``unix(7)``): the kernel tells the daemon the uid of the connecting
   process; a request from any uid but the daemon's own or root's is refused with 403, also
   if the permissions were loosened by mistake.

Routes (all JSON; errors as ``{"error", "message"}``):

===========================  ===================================================================
``GET /v1/tokens``           API tokens (never their secrets)
``POST /v1/tokens``          ``{"name", "scope"}`` -> the token with its secret (shown once);
                             scope ``trigger``, ``read``, ``viewer`` or ``admin``
``DELETE /v1/tokens/{id}``   revoke (its live connections close at once)
``GET /v1/devices``          paired devices
``DELETE /v1/devices/{id}``  unpair (its live connections close at once)
``POST /v1/pairing-codes``   ``{"kind": "device"|"admin"}`` -> a 12-digit single-use code
``PUT /v1/admin-password``   ``{"password"}``: set or reset the admin password (no old one)
``GET /v1/health``           the full health report
===========================  ===================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from climbd.api.security import SECURITY, SecurityState
from climbd.security import crypto, jsonsafe
from climbd.security.access import TOKEN_SCOPES
from climbd.security.connections import owner_key
from climbd.security.store import AuthStore

__all__ = ["SOCKET_NAME", "AdminSocket", "peer_uid", "socket_path"]

log = logging.getLogger(__name__)

#: File name of the socket in the state directory.
SOCKET_NAME = "admin.sock"
#: Largest request body, bytes.
MAX_BODY = 4096
_MAIN_APP: web.AppKey[web.Application] = web.AppKey("climbd_main_app", web.Application)
_HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("climbd_admin_health")


def socket_path(state_dir: Path) -> Path:
    """Where the admin socket of the daemon using ``state_dir`` listens."""
    return state_dir / SOCKET_NAME


def peer_uid(transport: asyncio.BaseTransport | None) -> int | None:
    """The uid of the process at the other end of a Unix-socket transport (SO_PEERCRED,
    ``struct ucred {pid_t pid; uid_t uid; gid_t gid;}``), or None if unknown."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


@web.middleware
async def _guard(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    uid = peer_uid(request.transport)
    if uid is None or uid not in (0, os.geteuid()):
        log.warning("refused an admin-socket request from uid %s", uid)
        return _error(403, "forbidden", "only root and the service user may use this socket")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except (ValueError, KeyError, TypeError) as exc:
        return _error(422, "invalid_request", str(exc))


def _security(request: web.Request) -> SecurityState:
    main = request.app[_MAIN_APP]
    state = main[SECURITY]
    state.ensure(main)
    return state


async def _store(request: web.Request) -> AuthStore:
    store = await _security(request).auth_store()
    if store is None:
        raise web.HTTPServiceUnavailable(text="access control is not available")
    return store


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(raw))
    data = jsonsafe.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise web.HTTPNotFound(text=f"no such id {raw[:40]!r}")
    return int(raw)


async def list_tokens(request: web.Request) -> web.Response:
    """``GET /v1/tokens``."""
    store = await _store(request)
    return web.json_response({"items": [t.to_dict() for t in store.tokens()]})


async def create_token(request: web.Request) -> web.Response:
    """``POST /v1/tokens``."""
    body = await _body(request)
    name, scope = str(body.get("name", "")), str(body.get("scope", "trigger"))
    if scope not in TOKEN_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(TOKEN_SCOPES)}")
    token, secret = await (await _store(request)).create_token(name, scope)
    log.warning("API token %d %r (scope %s) created on the admin socket", token.id,
                token.name, token.scope)
    return web.json_response({**token.to_dict(), "token": secret}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    """``DELETE /v1/tokens/{id}``."""
    token = await (await _store(request)).remove_token(_id(request))
    if token is None:
        raise web.HTTPNotFound(text="no such API token")
    await _security(request).live.cut_off(owner_key(None, token.id) or "")
    log.warning("API token %d %r revoked on the admin socket", token.id, token.name)
    return web.json_response(token.to_dict())


async def list_devices(request: web.Request) -> web.Response:
    """``GET /v1/devices``."""
    store = await _store(request)
    return web.json_response({"items": [d.to_dict() for d in store.devices()]})


async def remove_device(request: web.Request) -> web.Response:
    """``DELETE /v1/devices/{id}``."""
    device = await (await _store(request)).remove_device(_id(request))
    if device is None:
        raise web.HTTPNotFound(text="no such device")
    await _security(request).live.cut_off(owner_key(device.id, None) or "")
    log.warning("device %d %r unpaired on the admin socket", device.id, device.name)
    return web.json_response(device.to_dict())


async def create_code(request: web.Request) -> web.Response:
    """``POST /v1/pairing-codes``."""
    body = await _body(request)
    kind = body.get("kind", "device")
    if kind not in ("device", "admin"):
        raise ValueError("kind must be 'device' or 'admin'")
    state = _security(request)
    assert state.config is not None
    ttl = state.config.pairing_code_ttl_s
    code, expires = await (await _store(request)).create_code(
        kind, ttl, "cli", digits=crypto.CLI_CODE_DIGITS)
    return web.json_response({"code": crypto.format_code(code), "kind": kind,
                              "expires_at": expires, "ttl_s": ttl}, status=201)


async def set_password(request: web.Request) -> web.Response:
    """``PUT /v1/admin-password``."""
    body = await _body(request)
    password = body.get("password")
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    crypto.check_password_rules(password)
    state = _security(request)
    async with state.kdf_lock:
        digest = await asyncio.to_thread(crypto.hash_password, password)
    await (await _store(request)).set_admin_password_hash(digest)
    log.warning("admin password set on the admin socket")
    return web.json_response({"admin_configured": True})


async def health_report(request: web.Request) -> web.Response:
    """``GET /v1/health``: the daemon's full health report."""
    return web.json_response(request.app[_HEALTH]())


class AdminSocket:
    """The admin channel of one daemon: build, :meth:`start`, :meth:`stop`.

    Args:
        main_app: the HTTP application whose security state (credential store, live
            connections) the channel manages.
        path: the socket file (see :func:`socket_path`).
        health: returns the full health report (``Daemon.health``).
    """

    def __init__(self, main_app: web.Application, path: Path,
                 health: Callable[[], dict[str, Any]]):
        self.path = path
        self.app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
        self.app[_MAIN_APP] = main_app
        self.app[_HEALTH] = health
        r = self.app.router
        r.add_get("/v1/tokens", list_tokens)
        r.add_post("/v1/tokens", create_token)
        r.add_delete("/v1/tokens/{id}", revoke_token)
        r.add_get("/v1/devices", list_devices)
        r.add_delete("/v1/devices/{id}", remove_device)
        r.add_post("/v1/pairing-codes", create_code)
        r.add_put("/v1/admin-password", set_password)
        r.add_get("/v1/health", health_report)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on :attr:`path` (mode 0600; a stale socket file is replaced).

        Raises:
            OSError: the socket cannot be created (e.g. the path is too long for
                ``sockaddr_un``, 107 bytes).
        """
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        old = os.umask(0o177)  # the socket is born 0600: no window with wider permissions
        try:
            site = web.UnixSite(self._runner, str(self.path))
            await site.start()
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        """Stop listening and remove the socket file."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(OSError):
            self.path.unlink()
