"""OpenAPI 3.1 document built from the real aiohttp routes.

Every API handler is decorated with :func:`operation`, which records its summary, request
body and responses (pydantic models or media types). A JSON request body declared as a model
is also *validated* by the decorator: the handler receives the parsed model as its second
argument, so the documented body and the accepted body cannot drift apart.
:func:`build_document` walks ``app.router`` so the document can only describe routes that
exist; ``tests/test_openapi.py`` checks the converse (every ``/api`` route is documented).
:class:`DocumentCache` keeps it, built once per application.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from climbd.security import jsonsafe

__all__ = ["ACCESS", "MAX_JSON_BODY", "OPENAPI", "DocumentCache", "Handler", "Operation",
           "build_document", "operation", "read_json"]

#: An aiohttp handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Largest JSON request body read by :func:`read_json` unless a route says less, bytes.
MAX_JSON_BODY = 1024 * 1024

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


async def read_json(request: web.Request, max_body: int | None = None) -> dict[str, Any]:
    """The request's JSON object body ({} when empty).

    Raises:
        web.HTTPRequestEntityTooLarge: longer than ``max_body`` bytes, declared or counted (a
            chunked body has no Content-Length: its bytes are counted as they arrive).
        web.HTTPBadRequest: not JSON (also: nested deeper than
            :data:`climbd.security.jsonsafe.MAX_DEPTH`), or not an object.
    """
    if max_body is not None and (request.content_length or 0) > max_body:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body,
                                            actual_size=request.content_length or 0)
    if max_body is not None:
        raw = await request.content.read(max_body + 1)
        if len(raw) > max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=len(raw))
    else:
        raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = jsonsafe.loads(raw)  # a nesting limit: never a RecursionError
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


def operation(
    summary: str,
    *,
    tags: tuple[str, ...] = (),
    request: Body = None,
    responses: dict[int, tuple[str, Body]] | None = None,
    query: dict[str, tuple[str, str]] | None = None,
    access: str | None = None,
    max_body: int | None = None,
) -> Callable[[Callable[..., Awaitable[web.StreamResponse]]], Handler]:
    """Attach OpenAPI metadata to a handler; ``responses`` maps status -> (description, body).

    ``access`` is who may call it (see :mod:`climbd.security.access`): ``"anonymous"``,
    ``"share token"``, ``"token"`` (API token, device or admin), ``"wall"`` (paired device
    or admin) or ``"admin"``.

    ``request`` a pydantic model: the decorator reads the JSON body (at most ``max_body``
    bytes, else 413), validates it (a pydantic ``ValidationError`` becomes 422 in the error
    middleware; bad JSON 400) and calls ``handler(request, body)`` with the parsed model.
    A media type (``"application/sdp"``) is only documented: the handler reads it itself.

    Raises:
        ValueError: an unknown ``access`` value (a typo must not open a route).
    """
    if access is not None and access not in ACCESS:
        raise ValueError(f"access must be one of {ACCESS}, got {access!r}")
    op = Operation(summary, tags, request, dict(responses or {200: ("OK", None)}),
                   dict(query or {}), access)

    def wrap(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
        if isinstance(request, type) and issubclass(request, BaseModel):
            model = request

            @functools.wraps(handler)
            async def validated(req: web.Request) -> web.StreamResponse:
                body = model.model_validate(await read_json(req, max_body))
                return await handler(req, body)

            validated.__openapi__ = op  # type: ignore[attr-defined]
            return validated
        handler.__openapi__ = op  # type: ignore[attr-defined]
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


@dataclass
class DocumentCache:
    """The OpenAPI document of one application, built at the first request (the routes of
    a running app do not change). Put one in the app before it starts (``OPENAPI``)."""

    document: dict[str, Any] | None = None

    def get(self, app: web.Application, title: str, version: str) -> dict[str, Any]:
        """:func:`build_document` of ``app``, built once."""
        if self.document is None:
            self.document = build_document(app, title, version)
        return self.document


#: The application's :class:`DocumentCache`.
OPENAPI: web.AppKey[DocumentCache] = web.AppKey("climbd_openapi", DocumentCache)


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
