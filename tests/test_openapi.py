"""The served OpenAPI document matches the real routes, both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from climbd.api import create_app
from climbd.api.openapi import build_document, documented_routes
from climbd.config import Config
from climbd.services import Services

pytestmark = pytest.mark.unit


def _app() -> Any:
    """An app without services: only the route table is looked at."""
    return create_app(Services(Config()))


def test_every_api_route_is_documented_and_every_documented_route_exists() -> None:
    app = _app()
    routes = documented_routes(app)
    undocumented = [(m, p) for m, p, op in routes if op is None]
    assert not undocumented, f"routes without @operation: {undocumented}"
    doc = build_document(app, "climbd", "test")
    in_doc = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    real = {(m, p) for m, p, _ in routes}
    assert in_doc == real
    assert ("POST", "/api/recordings/start") in real and ("GET", "/api/sessions/{id}") in real


def test_document_is_valid_openapi_shape(tmp_path: Path) -> None:
    doc: dict[str, Any] = build_document(_app(), "climbd", "1")
    assert doc["openapi"].startswith("3.1")
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["responses"]
            for ref in _refs(op):
                name = ref.rsplit("/", 1)[-1]
                assert name in doc["components"]["schemas"], (path, ref)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if "$ref" in node else []
        for v in node.values():
            out += _refs(v)
        return out
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_built_once_per_app() -> None:
    from climbd.api.openapi import OPENAPI

    app = _app()
    first = app[OPENAPI].get(app, "climbd", "1")
    assert app[OPENAPI].get(app, "climbd", "1") is first
    assert _app()[OPENAPI].document is None  # another app: its own document


async def test_operation_validates_the_declared_body_itself() -> None:
    """The handler gets the parsed model; what is documented is what is accepted."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from pydantic import BaseModel, ConfigDict

    from climbd.api.app import error_middleware
    from climbd.api.openapi import operation

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int

    seen: list[Body] = []

    @operation("echo", request=Body, access="anonymous", max_body=64)
    async def echo(request: web.Request, body: Body) -> web.Response:
        seen.append(body)
        return web.json_response({"n": body.n})

    assert echo.__openapi__.request is Body  # type: ignore[attr-defined]
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/api/echo", echo)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/api/echo", json={"n": 3})
        assert r.status == 200 and await r.json() == {"n": 3} and seen == [Body(n=3)]
        for bad, status in (({"n": "x"}, 422), ({"n": 1, "extra": 1}, 422), ([1], 400)):
            r = await client.post("/api/echo", json=bad)
            assert r.status == status, bad
        r = await client.post("/api/echo", data=b"{" + b" " * 100 + b"}",
                              headers={"Content-Type": "application/json"})
        assert r.status == 413
    assert len(seen) == 1


def test_one_id_parser_takes_ascii_digits_only() -> None:
    from climbd.ids import MAX_ID_DIGITS, parse_id

    assert parse_id("0") == 0 and parse_id("42") == 42
    assert parse_id("9" * MAX_ID_DIGITS) == int("9" * MAX_ID_DIGITS)
    for bad in ("", "²", "٣", "1²", "-1", "+1", " 1", "1.0", "9" * (MAX_ID_DIGITS + 1)):
        assert parse_id(bad) is None, bad
