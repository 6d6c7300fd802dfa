"""Every route has an access rule, the rule is enforced, and private sessions stay private.

- Static checks on the route table: each ``/api`` handler declares ``access=``; the routes
  open to anonymous callers are exactly an allow-list; every route with a path parameter is
  classified as belonging to a session (privacy applies) or not.
- The role matrix, route by route from the served OpenAPI document: anonymous LAN clients,
  API tokens and paired devices are refused exactly where their role is too weak.
- A private session is invisible and unreadable to another device on every route that
  reaches it (metadata, list, poses, video, thumbnail, frame table, exports, export files,
  shares, privacy, edits) and over the live view's ghost data channel.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from climbd.api import create_app
from climbd.api.app import error_middleware
from climbd.api.auth import add_routes as add_auth_routes
from climbd.api.keys import CONFIG
from climbd.api.openapi import ACCESS, documented_routes, operation
from climbd.config import Config
from climbd.security import crypto
from climbd.security.access import NOT_SESSION_SCOPED, session_resource
from climbd.services import Services
from climbd.visibility import SYSTEM, viewing
from tests.securitykit import FAST_SCRYPT, Agent, new_code, secure_daemon, wait_frames

pytestmark = pytest.mark.integration

#: The only routes anyone who reaches the appliance may call (method, template). Adding one
#: here is a security decision: say why in the comment.
ANONYMOUS_ROUTES = {
    ("GET", "/api/health"),               # monitoring, the tablets' status light
    ("GET", "/api/openapi.json"),         # the API description (no data)
    ("GET", "/api/auth/me"),              # "who am I": the UI decides what to show
    ("POST", "/api/auth/pair"),           # pairing itself (code + rate limit)
    ("POST", "/api/auth/admin/setup"),    # first-run/reset (local or admin code + limit)
    ("POST", "/api/auth/admin/login"),    # login itself (password + rate limit)
    ("POST", "/api/auth/logout"),         # ending one's own session
    ("OPTIONS", "/api/whep"),             # CORS preflight (WHEP §4.3): no credentials
    ("GET", "/api/whep"),                 # 204, no representation
    ("OPTIONS", "/api/whep/delayed"),     # the same for the delayed live view
    ("GET", "/api/whep/delayed"),
    ("OPTIONS", "/api/whep/{id}"),        # CORS preflight
    ("OPTIONS", "/api/whep/delayed"),     # CORS preflight of the delayed view, as /api/whep
    ("GET", "/api/whep/delayed"),         # 204, no representation, as /api/whep
}
#: Non-API routes (method, template) and their rule: the web UI's static files, the pairing
#: page, and share links (capability URLs checked by their handler).
PAGE_ROUTES = {
    ("GET", "/"): "anonymous", ("GET", "/ui"): "anonymous", ("GET", "/pair"): "anonymous",
    ("GET", "/s/{token}"): "share token", ("GET", "/s/{token}/file"): "share token",
    ("GET", "/s/{token}/qr.svg"): "share token",
}


def _bare_app() -> web.Application:
    """An app without services: no handler runs in the static checks."""
    return create_app(Services(Config()))


def _routes() -> list[tuple[str, str, Any]]:
    return documented_routes(_bare_app())


def test_every_api_route_declares_its_access() -> None:
    missing = [(m, p) for m, p, op in _routes() if op is None or op.access is None]
    assert not missing, f"routes without @operation(access=...): {missing}"
    assert all(op.access in ACCESS for _m, _p, op in _routes())


def test_anonymous_routes_are_exactly_the_allow_list() -> None:
    anonymous = {(m, p) for m, p, op in _routes() if op.access in ("anonymous", "share token")}
    assert anonymous == ANONYMOUS_ROUTES, (
        f"newly anonymous: {sorted(anonymous - ANONYMOUS_ROUTES)}; "
        f"no longer anonymous: {sorted(ANONYMOUS_ROUTES - anonymous)}")


def test_every_page_route_has_a_known_rule() -> None:
    app = _bare_app()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or info.get("prefix")
        if path is None or path.startswith("/api") or route.method == "HEAD":
            continue
        op = getattr(route.handler, "__openapi__", None)
        rule = op.access if op is not None else "anonymous"
        assert PAGE_ROUTES.get((route.method, path.rstrip("/") or "/")) == rule, (
            route.method, path, rule)


def test_every_parameterised_route_is_classified_for_session_privacy() -> None:
    unclassified = sorted({p for _m, p, _op in _routes() if "{" in p
                           and session_resource(p) is None and p not in NOT_SESSION_SCOPED})
    assert not unclassified, ("say what the path parameter of these routes identifies "
                              f"(climbd.security.access): {unclassified}")


async def test_a_route_without_a_declared_rule_is_admin_only() -> None:
    """Fail closed: forgetting ``access=`` must not open a route."""

    @operation("new thing")
    async def undeclared(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def bare(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = Config.model_validate({"security": {"loopback_is_trusted": False}})
    add_auth_routes(app)
    app.router.add_get("/api/new", undeclared)
    app.router.add_get("/api/bare", bare)
    async with TestClient(TestServer(app)) as client:
        for path in ("/api/new", "/api/bare"):
            r = await client.get(path)
            assert r.status == 401, path
    trusted = web.Application(middlewares=[error_middleware])

    trusted[CONFIG] = Config.model_validate({"security": {"loopback_is_trusted": True}})
    add_auth_routes(trusted)
    trusted.router.add_get("/api/new", undeclared)
    async with TestClient(TestServer(trusted)) as client:
        assert (await client.get("/api/new")).status == 200  # a trusted local admin may


# -- the role matrix -----------------------------------------------------------------------
RANK = {"anonymous": 0, "share token": 0, "token": 1, "wall": 2, "admin": 3}


def _request_args(op: dict[str, Any]) -> dict[str, Any]:
    content = (op.get("requestBody") or {}).get("content", {})
    if "application/json" in content:
        return {"json": {}}
    for media in content:
        return {"data": b"v=0\r\n", "headers": {"Content-Type": media}}
    return {}


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "DEFAULT_SCRYPT", FAST_SCRYPT)


async def test_each_role_is_refused_exactly_where_its_rule_says(tmp_path: Path,
                                                                media: Path) -> None:
    async with secure_daemon(tmp_path, loopback_is_trusted=False, api_burst=10_000,
                             signalling_burst=1000) as (daemon, base), \
            Agent(base) as admin, Agent(base) as anon, Agent(base) as wall, \
            Agent(base, origin=None) as token:
        await admin.setup_admin(code=await new_code(daemon, "admin"))
        _, tok = await admin.req("POST", "/api/auth/tokens", json={"name": "button"})
        await wall.pair(await new_code(daemon))
        bearer = {"Authorization": f"Bearer {tok['token']}"}
        status, doc = await anon.req("GET", "/api/openapi.json")
        assert status == 200
        checked = 0
        for path, ops in sorted(doc["paths"].items()):
            url = re.sub(r"\{[^}]+\}", "1", path)  # every path parameter
            for method, op in ops.items():
                need = RANK[op["x-access"]]
                for who, rank, agent, extra in (("anonymous", 0, anon, {}),
                                                ("token", 1, token, bearer),
                                                ("wall", 2, wall, {})):
                    kw = _request_args(op)
                    kw["headers"] = {**kw.get("headers", {}), **extra}
                    if rank >= need and (method, path) in (("post", "/api/auth/unpair"),):
                        continue  # would unpair the test's own tablet
                    status, body = await agent.req(method.upper(), url, **kw)
                    refused = status == 401 or (
                        status == 403 and isinstance(body, dict)
                        and str(body.get("message", "")).startswith("this needs the"))
                    if rank < need:
                        assert status == (401 if who == "anonymous" else 403), (
                            who, method, path, status, body)
                    else:
                        assert not refused, (who, method, path, status, body)
                    checked += 1
        assert checked > 100
        await admin.req("POST", "/api/recordings/stop")


# -- private sessions ----------------------------------------------------------------------
MISSING = 99999


async def _poll_export(agent: Agent, export_id: int) -> dict[str, Any]:
    for _ in range(300):
        _, e = await agent.req("GET", f"/api/exports/{export_id}")
        if e["status"] in ("done", "failed"):
            return dict(e)
        await asyncio.sleep(0.1)
    raise AssertionError(f"export {export_id} did not finish: {e}")


def _synthetic_poses(n: int = 20) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (n, 33, 5)).astype(np.float32)
    world = rng.uniform(-1, 1, (n, 33, 3)).astype(np.float32)
    return (np.arange(n), np.arange(n) / 30.0, image, world)


def _normalise(body: Any, *ids: int) -> str:
    text = json.dumps(body, sort_keys=True) if not isinstance(body, bytes) else repr(body)
    for i in ids:
        text = re.sub(rf"\b{i}\b", "ID", text)
    return text


async def test_a_private_session_is_invisible_to_other_devices(tmp_path: Path,
                                                               media: Path) -> None:
    async with secure_daemon(tmp_path, loopback_is_trusted=False, api_burst=10_000) as (
            daemon, base), Agent(base) as admin, Agent(base) as a, Agent(base) as b:
        await admin.setup_admin(code=await new_code(daemon, "admin"))
        a_id = (await a.pair(await new_code(daemon), "climber A"))["device"]["id"]
        await b.pair(await new_code(daemon), "climber B")
        await wait_frames(daemon)
        _, s1 = await a.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        _, s2 = await b.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        sid, public = s1["id"], s2["id"]
        with viewing(SYSTEM):
            await daemon.db.append_poses(sid, *_synthetic_poses(), frame_count=30,
                                         duration_s=1.0)

        status, priv = await a.req("PUT", f"/api/sessions/{sid}/privacy", json={"private": True})
        assert status == 200 and priv == {"session_id": sid, "private": True,
                                          "owner_device_id": a_id}
        status, _ = await b.req("PUT", f"/api/sessions/{public}/privacy",
                                json={"private": False})
        assert status == 200  # B recorded it
        status, _ = await a.req("PUT", f"/api/sessions/{public}/privacy",
                                json={"private": True})
        assert status == 403  # owned by B

        _, export = await a.req("POST", f"/api/sessions/{sid}/exports", json={"kind": "video"})
        export = await _poll_export(a, export["id"])
        assert export["status"] == "done", export
        eid = export["id"]
        status, share = await a.req("POST", f"/api/exports/{eid}/share", json={})
        assert status == 201, share
        shid = share["id"]

        # the list: B does not see it, A and the admin do
        _, page_b = await b.req("GET", "/api/sessions")
        assert sid not in [s["id"] for s in page_b["items"]] and page_b["total"] == 1
        for agent in (a, admin):
            _, page = await agent.req("GET", "/api/sessions")
            assert sid in [s["id"] for s in page["items"]] and page["total"] == 2

        # every route that reaches the session: B's answer equals the one for a missing id
        _, doc = await a.req("GET", "/api/openapi.json")
        bodies: dict[str, dict[str, Any]] = {"/api/sessions/{id}": {"json": {"name": "mine now"}},
                  "/api/sessions/{id}/exports": {"json": {"kind": "video"}},
                  "/api/sessions/{id}/privacy": {"json": {"private": False}},
                  "/api/exports/{id}/share": {"json": {}}}
        ident = {"session": sid, "exports": eid, "shares": shid}
        compared = []
        for path, ops in doc["paths"].items():
            kind = session_resource(path)
            if kind is None:
                continue
            real = path.replace("{id}", str(ident[kind])).replace("{index}", "0")
            missing = path.replace("{id}", str(MISSING)).replace("{index}", "0")
            for method in ops:
                kw = bodies.get(path, {}) if method != "get" else {}
                got = await b.req(method.upper(), real, **kw)
                want = await b.req(method.upper(), missing, **kw)
                assert got[0] == want[0] and got[0] in (403, 404), (method, path, got, want)
                assert _normalise(got[1], ident[kind]) == _normalise(want[1], MISSING), (
                    method, path, got, want)
                compared.append((method, path))
                if method == "get":
                    status, _ = await a.req("GET", real)
                    if "{index}" in path and not s1.get("attempts"):
                        assert status == 404, (path, status)  # no attempt 0 to show
                    else:
                        assert status in (200, 206), (path, status)  # the owner can
        assert len(compared) >= 15, compared
        # nothing of B's attempts changed anything
        _, e = await a.req("GET", f"/api/exports/{eid}")
        assert e["status"] == "done"
        _, shares = await a.req("GET", f"/api/exports/{eid}/shares")
        assert [s["state"] for s in shares["items"]] == ["active"]
        _, s = await a.req("GET", f"/api/sessions/{sid}")
        assert s["name"] == s1["name"]
        # the share link itself still works: it is a deliberate hand-off by the owner
        async with Agent(base, origin=None) as phone:
            token_path = "/" + share["url"].split("/", 3)[3]
            assert (await phone.req("GET", token_path + "/file"))[0] == 200


async def _ghost_replies(agent: Agent, sid: int) -> list[dict[str, Any]]:
    """Open a live viewer as ``agent``, ask its data channel for the ghost of ``sid``, and
    return the text replies (hello excluded)."""
    from tests.whep_viewer import Viewer

    viewer = Viewer(decode=False)
    try:
        offer = (await viewer.offer()).encode()
        status, answer = await agent.req("POST", "/api/whep", data=offer,
                                         headers={"Content-Type": "application/sdp"})
        assert status == 201, answer
        await viewer.accept(answer.decode())
        channel = viewer.channel
        assert channel is not None
        assert await viewer.wait_for(lambda: channel.readyState == "open", 20)
        viewer.send(json.dumps({"type": "ghost", "action": "play", "session_id": sid,
                                "seq": 1}))

        def answered() -> bool:
            return any(t.get("seq") == 1 and (t.get("type") == "error" or (
                t.get("type") == "ghost_state" and t.get("session_id") is not None))
                for t in viewer.texts)

        await viewer.wait_for(answered, 10)
        return [t for t in viewer.texts if t.get("type") != "hello"]
    finally:
        await viewer.close()


async def test_ghost_of_a_private_session_is_refused_to_another_device(
        tmp_path: Path, media: Path) -> None:
    async with secure_daemon(tmp_path, loopback_is_trusted=False) as (daemon, base), \
            Agent(base) as a, Agent(base) as b:
        await a.pair(await new_code(daemon), "climber A")
        await b.pair(await new_code(daemon), "climber B")
        await wait_frames(daemon)
        _, s1 = await a.req("POST", "/api/recordings/save-last", json={"seconds": 1})
        sid = s1["id"]
        await daemon.db.append_poses(sid, *_synthetic_poses(), frame_count=30, duration_s=1.0)
        assert (await a.req("PUT", f"/api/sessions/{sid}/privacy",
                            json={"private": True}))[0] == 200
        replies = {"a": await _ghost_replies(a, sid), "b": await _ghost_replies(b, sid)}
        a_states = [t for t in replies["a"] if t.get("type") == "ghost_state"]
        assert any(t.get("session_id") == sid for t in a_states), replies["a"]
        b_errors = [t for t in replies["b"] if t.get("type") == "error"]
        assert b_errors and "no session with id" in b_errors[0]["error"], replies["b"]
        assert not any(t.get("session_id") == sid for t in replies["b"]
                       if t.get("type") == "ghost_state"), replies["b"]
