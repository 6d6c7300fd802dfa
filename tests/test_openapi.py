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
