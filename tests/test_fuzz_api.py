"""Property-based fuzzing of every HTTP route in the served OpenAPI document.

For each operation, hypothesis builds requests from the document itself: path parameters
(real ids, random numbers, text, traversal strings), the documented query parameters (typed
values and junk), bodies from the operation's JSON schema (valid, mutated, or arbitrary
JSON/bytes, deeply nested JSON) or its media type (SDP-like text), with non-ASCII digits
among the ids and query values, sent as one of four callers — the admin (an admin-scope
token), an anonymous LAN client, a paired device (cookie + CSRF) and an API token — to
one in-process daemon (fake camera, no pose) on 127.0.0.1.

Property: no 500, and no other 5xx unless the operation documents it (503 "no video yet",
507 "disk full"...); no traceback in a body; no unhandled exception logged; the daemon
still healthy at the end. At least 10,000 cases (:data:`TOTAL_CASES`) split evenly across
operations; about two minutes on an idle 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import string
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from climbd.api import create_app
from climbd.api.openapi import build_document
from climbd.api.security import SECURITY
from climbd.config import Config
from climbd.security import crypto
from climbd.services import Services
from tests.conftest import SHORT, TimeBudget
from tests.securitykit import (
    FAST_SCRYPT,
    Agent,
    admin_headers,
    new_code,
    secure_daemon,
    wait_frames,
)

pytestmark = pytest.mark.integration

#: Generated requests in all, split evenly across operations.
TOTAL_CASES = 10_200
LAN_HOST = "192.168.50.5"


def _document() -> dict[str, Any]:
    return build_document(create_app(Services(Config())), "climbd", "fuzz")


DOC = _document()
OPERATIONS = sorted(((m.upper(), p) for p, ops in DOC["paths"].items() for m in ops),
                    key=lambda mp: (mp[0] == "DELETE", mp[1], mp[0]))  # deletes last
PER_OPERATION = math.ceil(TOTAL_CASES / len(OPERATIONS))
#: Seconds for the whole fuzz run (CLIMBD_FUZZ_BUDGET_S): all 10,200 requests take about a
#: minute on a quiet 2-core machine; past the budget each operation stops early (reported).
BUDGET = TimeBudget(float(os.environ.get("CLIMBD_FUZZ_BUDGET_S", "150")), len(OPERATIONS))
RAN: Counter[tuple[str, str]] = Counter()

# -- strategies from JSON schemas ----------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=4)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return _resolve(DOC["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for (mostly) valid instances of a pydantic JSON schema."""
    schema = _resolve(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s) for s in schema[key]])
    typ = schema.get("type")
    if typ == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items()
                                      if k in required}, optional=optional)
    if typ == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    if typ == "string":
        lo, hi = schema.get("minLength", 0), min(schema.get("maxLength", 60), 60)
        return st.text(min_size=min(lo, hi), max_size=hi)
    if typ in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if typ == "integer":
            return st.integers(None if lo is None else math.ceil(lo),
                               None if hi is None else math.floor(hi))
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    if typ == "boolean":
        return st.booleans()
    if typ == "null":
        return st.none()
    return json_values


@st.composite
def json_bodies(draw: st.DrawFn, schema: dict[str, Any]) -> bytes:
    """Valid bodies, mutated ones (wrong types, extra or missing keys), junk, and deeply
    nested JSON (``[`` x 2000: the review's 500)."""
    kind = draw(st.integers(0, 11))
    if kind >= 10:
        depth = draw(st.integers(20, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"x":', "}]")]))
        balanced = draw(st.booleans())
        return (opener * depth + ("1" + closer * depth if balanced else "")).encode()
    if kind <= 4:
        value: Any = draw(from_schema(schema))
        if kind >= 3 and isinstance(value, dict):
            if value and draw(st.booleans()):  # type: ignore[arg-type,unused-ignore]
                victim = draw(st.sampled_from(sorted(value)))
                value[victim] = draw(json_values)
            else:
                value[draw(st.text(max_size=10))] = draw(json_values)
        return json.dumps(value).encode()
    if kind <= 6:
        return json.dumps(draw(json_values)).encode()
    if kind == 7:
        return draw(st.binary(max_size=200))
    if kind == 8:
        return b""
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


SDP_LINES = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
             "a=mid:0", "a=recvonly", "a=rtcp-mux", "a=rtpmap:96 H264/90000",
             "a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=setup:actpass",
             "a=candidate:1 1 udp 1 127.0.0.1 9 typ host", "a=end-of-candidates",
             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel"]
text_bodies = st.lists(st.sampled_from(SDP_LINES) | st.text(max_size=60), max_size=12).map(
    lambda lines: "\r\n".join(lines).encode("utf-8", "surrogatepass")) | st.binary(max_size=300)

#: Unicode digits that str.isdigit() accepts but int() or an ASCII id parser must not
#: (superscript two, Arabic-Indic three, fullwidth one-two, Lao one, Devanagari 7)
NON_ASCII_DIGITS = ["\u00b2", "\u0663", "\uff11\uff12", "\u0ed1", "1\u096d", "\u00b9\u00b2\u00b3"]
TRAVERSAL = ["..", "../..", "..%2f..", "%2e%2e", "%252e%252e", "..\\..", "%00", "1%00",
             "/etc/passwd", "1/../2", "\uff0e\uff0e", "1;rm", "%", "%zz", " ", ""]
path_values = (st.sampled_from(["1", "2", "3", "0", "99999", "-1", "1e3", "0x1", "01",
                                str(2**63), str(10**30), "abc"])
               | st.sampled_from(TRAVERSAL)
               | st.integers(-10, 10**20).map(str)
               | st.sampled_from(NON_ASCII_DIGITS)
               | st.text(max_size=30))


def _encode_segment(value: str, raw: bool) -> str:
    return quote(value, safe="/%.\\" if raw else "")


def query_values(typ: str) -> st.SearchStrategy[str]:
    typed: st.SearchStrategy[Any]
    if typ == "integer":
        typed = st.integers(-10, 10**12)
    elif typ == "number":
        typed = st.floats(allow_nan=True, allow_infinity=True)
    else:
        typed = st.sampled_from(["json", "bin", "1", "true"])
    return typed.map(str) | st.text(max_size=20) | st.sampled_from(NON_ASCII_DIGITS)


@st.composite
def requests(draw: st.DrawFn, method: str, path: str) -> dict[str, Any]:
    op = DOC["paths"][path][method.lower()]
    url = path
    for name in re.findall(r"{(\w+)}", path):
        url = url.replace("{" + name + "}", _encode_segment(draw(path_values),
                                                            draw(st.booleans())), 1)
    query: list[tuple[str, str]] = []
    for param in op.get("parameters", []):
        if param["in"] == "query" and draw(st.booleans()):
            query.append((param["name"], draw(query_values(param["schema"]["type"]))))
    if draw(st.integers(0, 7)) == 0:
        query.append((draw(st.text(string.ascii_letters, min_size=1, max_size=8)),
                      draw(st.text(max_size=20))))
    headers: dict[str, str] = {}
    data: bytes | None = None
    content = (op.get("requestBody") or {}).get("content", {})
    if "application/json" in content:
        data = draw(json_bodies(content["application/json"]["schema"]))
        headers["Content-Type"] = draw(st.sampled_from(
            ["application/json", "application/json", "text/plain", "application/sdp"]))
    elif content:
        media = next(iter(content))
        data = draw(text_bodies)
        headers["Content-Type"] = draw(st.sampled_from([media, media, "application/json",
                                                        "text/plain; charset=utf-8"]))
    elif draw(st.integers(0, 5)) == 0:
        data = draw(st.binary(max_size=100))
    if draw(st.integers(0, 9)) == 0:
        headers[draw(st.sampled_from(["If-Match", "Range", "Upgrade", "Accept",
                                      "X-CSRF-Token"]))] = draw(
            st.text(string.printable.strip(), max_size=30))
    who = draw(st.sampled_from(["admin", "lan", "device", "token"]))
    return {"url": url, "query": query, "data": data, "headers": headers, "who": who}


# -- the daemon under test -----------------------------------------------------------------
class Target:
    """The daemon, run on an event loop in a background thread, so that hypothesis (which
    drives synchronous tests) can submit each request to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.daemon: Any = None
        self.base = ""
        self.port = 0
        self.session: aiohttp.ClientSession | None = None
        self.device_cookie = ""
        self.token = ""
        self.admin_token = ""
        self.statuses: Counter[int] = Counter()

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def ensure_credentials(self) -> None:
        store = await self.daemon.app[SECURITY].auth_store()
        if store.device_for(self.device_cookie) is None:  # the fuzzer unpaired it
            _device, self.device_cookie = await store.pair_device("fuzz tablet")
        if store.token_for(self.token) is None:  # or revoked the token
            _tok, self.token = await store.create_token("fuzz button")
        if store.token_for(self.admin_token) is None:  # the admin (as the admin socket makes)
            _tok, self.admin_token = await store.create_token("fuzz admin", "admin")

    async def send(self, method: str, req: dict[str, Any]) -> tuple[int, bytes]:
        await self.ensure_credentials()
        lan = f"{LAN_HOST}:{self.port}"
        headers = dict(req["headers"])
        if req["who"] == "admin":  # an admin token on loopback (loopback alone is nobody)
            headers["Host"] = f"127.0.0.1:{self.port}"
            headers["Authorization"] = f"Bearer {self.admin_token}"
        else:
            headers["Host"] = lan
            headers.setdefault("Origin", f"http://{lan}")
        if req["who"] == "device":
            headers["Cookie"] = f"climbd_device={self.device_cookie}"
            headers.setdefault("X-CSRF-Token", crypto.csrf_token(self.device_cookie))
        elif req["who"] == "token":
            headers["Authorization"] = f"Bearer {self.token}"
        url = URL(self.base + req["url"], encoded=True)
        if req["query"]:
            url = url.with_query(req["query"])
        assert self.session is not None
        async with self.session.request(method, url, data=req["data"], headers=headers,
                                        allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=20)) as r:
            return r.status, await r.read()


async def _start(t: Target, tmp: Path) -> Any:
    cm = secure_daemon(tmp, api_burst=10**6, api_requests_per_s=1e6,
                       signalling_burst=10**6, signalling_per_min=1e6)
    t.daemon, t.base = await cm.__aenter__()
    t.port = t.daemon.port
    await wait_frames(t.daemon)
    headers = await admin_headers(t.daemon)  # an admin token from the admin socket
    async with Agent(t.base, origin=None) as admin:
        for _ in range(2):
            status, body = await admin.req("POST", "/api/recordings/save-last",
                                           json={"seconds": 1}, headers=headers)
            assert status == 201, body
        status, body = await admin.req("POST", "/api/sessions/1/exports",
                                       json={"kind": "video"}, headers=headers)
        assert status in (201, 202), body
    t.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    await t.ensure_credentials()
    store = await t.daemon.app[SECURITY].auth_store()
    dev = store.device_for(t.device_cookie)
    await store.set_privacy(2, private=True, owner_device_id=dev.id)
    await new_code(t.daemon)
    return cm


async def _stop(t: Target, cm: Any) -> None:
    assert t.session is not None
    async with t.session.get(t.base + "/api/health") as r:
        assert r.status == 200, await r.text()
    await t.session.close()
    await cm.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if not SHORT.exists():
        pytest.skip("test media not found")
    mp = pytest.MonkeyPatch()
    mp.setattr(crypto, "DEFAULT_SCRYPT", FAST_SCRYPT)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-daemon", daemon=True)
    thread.start()
    t = Target(loop)
    cm = t.run(_start(t, tmp_path_factory.mktemp("fuzz")))
    try:
        yield t
    finally:
        try:
            t.run(_stop(t, cm))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
            mp.undo()
            print(f"\nfuzz: {sum(RAN.values())} requests over {len(RAN)} operations, "
                  f"statuses {dict(sorted(t.statuses.items()))}")


class _Errors(logging.Handler):
    """Collects unhandled exceptions the daemon logs while a route is fuzzed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unhandled" in record.getMessage():
            self.records.append(record)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(target: Target, method: str, path: str) -> None:
    documented = {int(s) for s in DOC["paths"][path][method.lower()]["responses"]}
    errors = _Errors()
    logging.getLogger("climbd").addHandler(errors)

    def chunk(n: int) -> int:
        @settings(max_examples=n, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(req=requests(method, path))
        def case(req: dict[str, Any]) -> None:
            status, body = target.run(target.send(method, req))
            target.statuses[status] += 1
            RAN[(method, path)] += 1
            assert status != 500 and (status < 500 or status in documented), (
                method, req, status, body[:300])
            assert b"Traceback" not in body, (req, body[:300])

        before = RAN[(method, path)]
        case()
        return RAN[(method, path)] - before

    try:
        BUDGET.run(chunk, PER_OPERATION)
    finally:
        logging.getLogger("climbd").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records][:3]


def test_fuzz_ran_enough_cases(target: Target) -> None:
    if set(RAN) != set(OPERATIONS):
        pytest.skip(f"only part of the fuzz suite ran (not: {sorted(set(OPERATIONS) - set(RAN))})")
    if BUDGET.short:
        pytest.skip(f"time budget of {BUDGET.seconds:.0f} s (CLIMBD_FUZZ_BUDGET_S) used up after "
                    f"{sum(RAN.values())} requests: the machine is slow or loaded")
    assert sum(RAN.values()) >= 10_000
