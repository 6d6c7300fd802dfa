"""Hostile clients against a real daemon process (``climbd run`` on 127.0.0.1, LAN rules:
``security.loopback_is_trusted = false``).

Attackers connect from other loopback addresses (127.0.0.2-5) so per-client limits apply to
them, not to the well-behaved client on 127.0.0.1 whose health-check latency is measured
while they attack. Figures are printed (``pytest -s``) and bounded generously.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, SHORT, DaemonProcess
from tests.securitykit import Agent

pytestmark = [pytest.mark.integration, pytest.mark.timing]  # wall-clock rates and delays

CONFIG = """
[pose]
enabled = false
[retention]
floor_mb = 0
headroom_s = 0
[webrtc]
host_candidates = ["127.0.0.1"]
[security]
loopback_is_trusted = false
header_timeout_s = 2.0
max_connections_per_client = 20
signalling_per_min = 30.0
signalling_burst = 6
api_requests_per_s = 200.0
api_burst = 400
auth_attempts_per_min = 30.0
auth_attempts_global_per_min = 60.0
"""
CANARY = "climbd-canary-7f3a9c"
#: Generous bound on the health latency (p95, seconds) other clients see under attack.
LATENCY_BOUND_S = 0.5


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    if not SHORT.exists():
        pytest.skip("test media not found")
    root = tmp_path_factory.mktemp("abuse")
    cfg = root / "climbd.toml"
    cfg.write_text(CONFIG)
    (root / "secret.txt").write_text(CANARY)
    d = DaemonProcess(root / "state", SHORT, "--config", str(cfg))
    try:
        d.wait_ready(capture=False)
        (d.state_dir / "secret.txt").write_text(CANARY)
        yield d
    finally:
        d.stop()
        log = d.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]


def _code(d: DaemonProcess, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "climbd", "pair", "--state-dir",
                          str(d.state_dir), *extra], capture_output=True, text=True,
                         cwd=REPO, check=True)
    return out.stdout.strip()


async def _paired(d: DaemonProcess, address: str) -> Agent:
    agent = Agent(d.base, local_addr=(address, 0))
    await agent.__aenter__()
    await agent.pair(_code(d), name=f"device at {address}")
    return agent


async def _health_latencies(base: str, stop: asyncio.Event, out: list[float],
                            errors: list[Any]) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with s.get(base + "/api/health", timeout=aiohttp.ClientTimeout(10)) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)


def _report(name: str, lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    fig = {"n": len(lat), "p50_ms": 1000 * statistics.median(lat),
           "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))], "max_ms": 1000 * lat[-1]}
    print(f"\n{name}: health latency n={fig['n']} p50={fig['p50_ms']:.1f} ms "
          f"p95={fig['p95_ms']:.1f} ms max={fig['max_ms']:.1f} ms")
    return fig


async def test_signalling_flood_is_refused_and_others_stay_served(
        daemon: DaemonProcess) -> None:
    baseline: list[float] = []
    stop, errors = asyncio.Event(), list[Any]()
    probe = asyncio.create_task(_health_latencies(daemon.base, stop, baseline, errors))
    await asyncio.sleep(1.5)
    stop.set()
    await probe
    base_fig = _report("baseline", baseline)

    attacker = await _paired(daemon, "127.0.0.2")
    statuses: Counter[int] = Counter()
    n, concurrency = 1500, 16
    lat: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_health_latencies(daemon.base, stop, lat, errors))
    t0 = time.perf_counter()

    async def worker(count: int) -> None:
        for _ in range(count):
            status, _ = await attacker.req("POST", "/api/whep", data=b"v=0\r\n",
                                           headers={"Content-Type": "application/sdp"})
            statuses[status] += 1

    try:
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        await probe
        await attacker.__aexit__()
    total = sum(statuses.values())
    print(f"\nflood: {total} POST /api/whep in {elapsed:.1f} s ({total / elapsed:.0f}/s): "
          f"{dict(statuses)}")
    fig = _report("during the flood", lat)
    assert not errors, errors[:5]
    assert all(s < 500 for s in statuses), statuses
    assert statuses[429] >= total - 10  # the burst (6) got through, as malformed offers
    assert fig["n"] >= 10 and fig["p95_ms"] / 1000 < LATENCY_BOUND_S, (base_fig, fig)


async def test_slow_clients_are_dropped_and_do_not_block_others(
        daemon: DaemonProcess) -> None:
    host, port = "127.0.0.1", int(daemon.base.rsplit(":", 1)[1])
    request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    streams = [await asyncio.open_connection(host, port, local_addr=("127.0.0.3", 0))
               for _ in range(15)]
    closed_at: list[float] = []
    t0 = time.perf_counter()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                if reader.at_eof():
                    break
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        data = await asyncio.wait_for(reader.read(), 10)  # EOF once the server gives up
        assert b"200 OK" not in data
        closed_at.append(time.perf_counter() - t0)

    lat: list[float] = []
    stop, errors = asyncio.Event(), list[Any]()
    probe = asyncio.create_task(_health_latencies(daemon.base, stop, lat, errors))
    await asyncio.gather(*(trickle(r, w) for r, w in streams))
    stop.set()
    await probe
    for _r, w in streams:
        w.close()
    fig = _report("during 15 slow clients", lat)
    print(f"slow clients dropped after {min(closed_at):.1f}-{max(closed_at):.1f} s "
          "(header_timeout_s = 2)")
    assert not errors and fig["p95_ms"] / 1000 < LATENCY_BOUND_S
    assert min(closed_at) > 1.5 and max(closed_at) < 6.0


async def test_connection_cap_per_client(daemon: DaemonProcess) -> None:
    host, port = "127.0.0.1", int(daemon.base.rsplit(":", 1)[1])
    conns = [await asyncio.open_connection(host, port, local_addr=("127.0.0.4", 0))
             for _ in range(40)]

    async def is_closed(reader: asyncio.StreamReader) -> bool:
        try:  # well within header_timeout_s (2 s), which would close the others too
            return await asyncio.wait_for(reader.read(1), 0.5) == b""
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True

    closed = sum(await asyncio.gather(*(is_closed(r) for r, _w in conns)))
    status, _ = await asyncio.to_thread(__import__("tests.conftest", fromlist=["http"]).http,
                                        "GET", daemon.base + "/api/health")
    for _r, w in conns:
        w.close()
    print(f"\n40 idle connections from one address: {closed} closed at once (cap 20)")
    assert closed == 20 and status == 200


async def test_oversized_bodies_headers_and_messages(daemon: DaemonProcess) -> None:
    agent = await _paired(daemon, "127.0.0.5")
    try:
        big = b"x" * (2 * 1024 * 1024)
        for path in ("/api/auth/pair", "/api/recordings/start", "/api/auth/admin/login"):
            status, _ = await agent.req("POST", path, data=big,
                                        headers={"Content-Type": "application/json"})
            assert status == 413, path
        status, _ = await agent.req("POST", "/api/whep", data=big,
                                    headers={"Content-Type": "application/sdp"})
        assert status in (413, 429)
        status, _ = await agent.req("GET", "/api/health", headers={"X-Big": "y" * 20000})
        assert status in (400, 431)
        status, _ = await agent.req("POST", "/api/auth/pair", json={"code": "1" * 3000})
        assert status == 422
        # a WebSocket message over the limit closes that socket only
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in agent.cookies.items()),
                   "Origin": daemon.base}
        async with aiohttp.ClientSession() as s, s.ws_connect(
                daemon.base.replace("http", "ws") + "/api/live", headers=headers) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"
            await ws.send_str(json.dumps({"type": "ping", "pad": "z" * 10000}))
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING):
                    break
            assert ws.close_code == 1009  # RFC 6455 §7.4.1: message too big
        assert (await agent.req("GET", "/api/health"))[0] == 200
    finally:
        await agent.__aexit__()


TRAVERSALS = [
    "/ui/../secret.txt", "/ui/%2e%2e/%2e%2e/secret.txt", "/ui/..%2f..%2fsecret.txt",
    "/ui/%252e%252e/%252e%252e/secret.txt", "/ui/..\\..\\secret.txt", "/ui//etc/passwd",
    "/ui/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/ui/..%c0%af..%c0%afetc/passwd",
    "/ui/\uff0e\uff0e/secret.txt", "/ui/js/../../../secret.txt", "/ui/%00../secret.txt",
    "/pair/../secret.txt", "/pair/..%2f..%2fsecret.txt", "/pair/%2e%2e/%2e%2e/etc/passwd",
    "/s/..%2f..%2fsecret.txt", "/s/../../secret.txt/file", "/s/%2e%2e%2f%2e%2e/file",
    "/s/" + "A" * 43 + "%2f..%2f..%2fsecret.txt/file",
    "/api/sessions/..%2f..%2fsecret.txt/video", "/api/sessions/1%2f..%2f..%2fsecret.txt/video",
    "/api/sessions/../../secret.txt", "/api/sessions/1/video/../../../../secret.txt",
    "/api/sessions/%2e%2e/thumbnail", "/api/sessions/1%00/video", "/api/sessions/-1/video",
    "/api/sessions/1e3/frames", "/api/sessions/0x1/poses", "/api/sessions/1/../2/video",
    "/api/exports/..%2f..%2fsecret.txt/file", "/api/exports/1/file/../../../secret.txt",
    "/api/exports/%2e%2e/file", "/api/exports/1%2f..%2f..%2fsecret.txt",
    "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "//etc/passwd",
    "/ui/icons/../../../../../../etc/passwd",
]


async def test_path_traversal_on_every_route_that_touches_files(
        daemon: DaemonProcess) -> None:
    agent = await _paired(daemon, "127.0.0.6")
    try:
        seen: Counter[int] = Counter()
        for path in TRAVERSALS:
            resp = await agent.raw("GET", path)
            async with resp:
                body = await resp.read()
            seen[resp.status] += 1
            assert resp.status < 500, (path, resp.status)
            assert CANARY.encode() not in body and b"root:x:0:0" not in body, path
        print(f"\n{len(TRAVERSALS)} traversal attempts: {dict(seen)}")
        assert (await agent.req("GET", "/ui/js/live.js"))[0] == 200  # the UI still works
    finally:
        await agent.__aexit__()
