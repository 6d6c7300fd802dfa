"""Share links name an address a phone on the LAN can reach, never a loopback one.

The LAN address comes from local tables only (routing table, interface addresses), so these
tests send nothing: the pure functions get hand-made tables, the end-to-end one asks an
in-process daemon for a share over 127.0.0.1 and checks the link's host against this
machine's own interface table.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from climbd import lan, share

pytestmark = pytest.mark.unit

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""
IFACES = {"lo": ["127.0.0.1"], "docker0": ["172.17.0.1"], "eth0": ["10.0.0.7"],
          "wlan0": ["192.168.1.20"]}


def test_default_route_interfaces_lowest_metric_first() -> None:
    assert lan.default_route_interfaces(ROUTES) == ["eth0", "wlan0"]
    down = ROUTES.replace("eth0\t00000000\t0100000A\t0003", "eth0\t00000000\t0100000A\t0002")
    assert lan.default_route_interfaces(down) == ["wlan0"]  # RTF_UP clear
    assert lan.default_route_interfaces("") == []
    assert lan.default_route_interfaces("header\ngarbage line\n") == []


def test_lan_ipv4_prefers_the_default_route_interface() -> None:
    assert lan.lan_ipv4(ROUTES, IFACES) == "10.0.0.7"
    # the default-route interface has no usable IPv4 (link-local only): the next one
    assert lan.lan_ipv4(ROUTES, {**IFACES, "eth0": ["169.254.3.4"]}) == "192.168.1.20"
    # an offline LAN with no gateway: the first private address of any interface
    no_route = ROUTES.splitlines()[0]
    assert lan.lan_ipv4(no_route, {"lo": ["127.0.0.1"], "eth0": ["192.168.5.2"]}) == \
        "192.168.5.2"
    assert lan.lan_ipv4(no_route, {"lo": ["127.0.0.1"]}) is None


def test_lan_host_falls_back_to_the_mdns_name() -> None:
    assert lan.lan_host("", {"lo": ["127.0.0.1"]}, hostname="climbwall.example") == \
        "climbwall.local"
    assert lan.lan_host(ROUTES, IFACES, hostname="x") == "10.0.0.7"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.8.9.10",
                                  "::1", "[::1]", "0.0.0.0", "app.localhost"])
def test_loopback_names(host: str) -> None:
    assert lan.is_loopback_host(host)


@pytest.mark.parametrize("host", ["192.168.1.20", "climbwall.local", "[fe80::1]", "wall"])
def test_not_loopback_names(host: str) -> None:
    assert not lan.is_loopback_host(host)


def test_share_base_url_replaces_a_loopback_host_keeps_the_port() -> None:
    def here() -> str:
        return "192.168.1.20"

    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
        assert share.base_url_for("", host, "http", lan_host=here) == "http://192.168.1.20:8080"
    assert share.base_url_for("", "localhost", "https", lan_host=here) == "https://192.168.1.20"
    # a Host the tablet used to reach us is kept; a configured base_url wins over all
    assert share.base_url_for("", "wall.local:8080", lan_host=here) == "http://wall.local:8080"
    assert share.base_url_for("http://10.1.1.1:80/", "127.0.0.1:8080", lan_host=here) == \
        "http://10.1.1.1:80"


def test_this_machine_has_a_reachable_address_from_its_own_tables() -> None:
    """Reads /proc/net/route and the interface table (no packet sent)."""
    table = lan.interface_ipv4s()
    assert "lo" in table and "127.0.0.1" in table["lo"]
    host = lan.lan_host()
    assert not lan.is_loopback_host(host)
    if not host.endswith(".local"):
        assert any(host in addrs for addrs in table.values())
        assert not ipaddress.ip_address(host).is_loopback
    else:
        assert host == socket.gethostname().split(".")[0] + ".local"


@pytest.mark.integration
async def test_share_link_made_over_loopback_names_the_lan_address(tmp_path: Path) -> None:
    from tests.export_support import copy_template, start_daemon

    expected = lan.lan_host()
    state = copy_template(tmp_path / "state")
    async with start_daemon(state) as (c, _daemon):
        assert urlsplit(c.base).hostname == "127.0.0.1"
        status, e = await c.req("POST", "/api/sessions/1/exports", json={"kind": "csv"})
        assert status == 202, e
        e = await c.wait_export(e["id"])
        status, s = await c.req("POST", f"/api/exports/{e['id']}/share", json={})
        assert status == 201, s
        url = urlsplit(s["url"])
        assert url.hostname == expected and not lan.is_loopback_host(url.hostname or "")
        assert url.port == urlsplit(c.base).port and url.path.startswith("/s/")
        assert urlsplit(s["qr_svg_url"]).hostname == expected
        # the link works (fetched through loopback: the test never uses the LAN interface)
        status, page = await c.req("GET", url.path, raw=True)
        assert status == 200 and b"Pose data (CSV)" in page
