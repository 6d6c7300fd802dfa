"""OpenAPI 3.1 document built from the real aiohttp routes.

Every API handler is decorated with :func:`operation`, which records its summary, request
body and responses (pydantic models or media types). :func:`build_document` walks
``app.router`` so the document can only describe routes that exist; ``tests/test_openapi.py``
checks the converse (every ``/api`` route is documented).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

__all__ = ["ACCESS", "Operation", "build_document", "operation"]

F = TypeVar("F", bound=Callable[..., Any])

#: Access values of :func:`operation`, weakest first (enforced by climbd.security).
ACCESS: tuple[str, ...] = ("anonymous", "share token", "token", "wall", "admin")

Body = type[BaseModel] | str | None  # a model (JSON) or a media type such as "application/sdp"


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says about one handler."""

    summary: str
    tags: tuple[str, ...] = ()
    request: Body = None
    responses: dict[int, tuple[str, Body]] = field(default_factory=dict)
    query: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (type, description)
    #: who may call it: one of ACCESS; None = not declared, which climbd.security treats
    #: as "admin" (closed until decided) and tests/test_security_access.py rejects
    access: str | None = None


def operation(
    summary: str,
    *,
    tags: tuple[str, ...] = (),
    request: Body = None,
    responses: dict[int, tuple[str, Body]] | None = None,
    query: dict[str, tuple[str, str]] | None = None,
    access: str | None = None,
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a handler; ``responses`` maps status -> (description, body).

    ``access`` is who may call it (see :mod:`climbd.security.access`): ``"anonymous"``,
    ``"share token"``, ``"token"`` (API token, device or admin), ``"wall"`` (paired device
    or admin) or ``"admin"``.

    Raises:
        ValueError: an unknown ``access`` value (a typo must not open a route).
    """
    if access is not None and access not in ACCESS:
        raise ValueError(f"access must be one of {ACCESS}, got {access!r}")

    def wrap(handler: F) -> F:
        handler.__openapi__ = Operation(  # type: ignore[attr-defined]
            summary, tags, request, dict(responses or {200: ("OK", None)}), dict(query or {}),
            access,
        )
        return handler

    return wrap


def _content(body: Body, schemas: dict[str, Any]) -> dict[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, str):
        return {body: {"schema": {"type": "string"}}}
    schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[body.__name__] = schema
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}


def documented_routes(app: web.Application) -> list[tuple[str, str, Operation | None]]:
    """``(method, path, operation)`` for every non-HEAD route of ``app`` under ``/api``."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if not path or not path.startswith("/api") or route.method == "HEAD":
            continue
        handler = route.handler
        out.append((route.method, path, getattr(handler, "__openapi__", None)))
    return out


def build_document(app: web.Application, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s ``/api`` routes."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for method, path, op in documented_routes(app):
        if op is None:
            continue
        entry: dict[str, Any] = {"summary": op.summary, "x-access": op.access or "admin"}
        if op.tags:
            entry["tags"] = list(op.tags)
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": typ},
             "description": desc}
            for name, (typ, desc) in op.query.items()
        ]
        if params:
            entry["parameters"] = params
        if op.request is not None:
            entry["requestBody"] = {"content": _content(op.request, schemas)}
        responses = {}
        for status, (desc, body) in op.responses.items():
            resp: dict[str, Any] = {"description": desc}
            content = _content(body, schemas)
            if content:
                resp["content"] = content
            responses[str(status)] = resp
        entry["responses"] = responses
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
