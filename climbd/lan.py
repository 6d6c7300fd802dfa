"""This machine's address on the LAN, found without sending a single packet.

Share links and QR codes must name an address a phone on the gym's network can reach, and a
tablet that talks to the daemon over ``localhost`` gives no such address. The answer comes
from local tables only:

1. the kernel's IPv4 routing table (``/proc/net/route``, see ``route(8)``): the interfaces
   that carry a default route (destination ``00000000``, flag ``RTF_UP``), lowest metric
   first;
2. the IPv4 address of each interface (``ioctl(SIOCGIFADDR)``, ``netdevice(7)``, on an
   unconnected UDP socket, which sends nothing): the first non-loopback, non-link-local
   address of a default-route interface; if there is no default route (normal on an
   offline LAN without a gateway), the first private (RFC 1918) address of any interface,
   then any other non-loopback one;
3. otherwise ``<hostname>.local`` (mDNS, RFC 6762; avahi on the appliance image).

Nothing is connected, resolved or sent. Pure functions take the tables as arguments so
tests can hand them in.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["default_route_interfaces", "interface_ipv4s", "is_loopback_host", "lan_host",
           "lan_ipv4"]

ROUTE_TABLE = Path("/proc/net/route")
#: ``RTF_UP`` in ``linux/route.h``.
_RTF_UP = 0x0001
#: ``SIOCGIFADDR`` in ``linux/sockios.h``.
_SIOCGIFADDR = 0x8915


def interface_ipv4s() -> dict[str, list[str]]:
    """Each network interface's IPv4 address (``{name: [address]}``; none: ``[]``).

    Reads the kernel's interface table with ``ioctl(SIOCGIFADDR)`` on a UDP socket that is
    never bound, connected or sent on.
    """
    out: dict[str, list[str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            out[name] = []
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # no IPv4 address on it (EADDRNOTAVAIL)
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                out[name].append(socket.inet_ntoa(reply[20:24]))
    return out


def default_route_interfaces(route_table: str) -> list[str]:
    """Interfaces with an up IPv4 default route, lowest metric first.

    Args:
        route_table: the text of ``/proc/net/route`` (header line, then one line per route:
            Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask, ... in hex).
    """
    routes: list[tuple[int, str]] = []
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, flags, metric = int(fields[1], 16), int(fields[3], 16), int(fields[6])
            mask = int(fields[7], 16)
        except ValueError:
            continue
        if destination == 0 and mask == 0 and flags & _RTF_UP:
            routes.append((metric, fields[0]))
    seen: list[str] = []
    for _, iface in sorted(routes):
        if iface not in seen:
            seen.append(iface)
    return seen


def _ipv4s(addresses: Iterable[str]) -> list[ipaddress.IPv4Address]:
    out = []
    for address in addresses:
        try:
            out.append(ipaddress.IPv4Address(address))
        except ValueError:
            continue
    return out


def _usable(ip: ipaddress.IPv4Address) -> bool:
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def lan_ipv4(route_table: str | None = None,
             interfaces: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """The IPv4 address phones on the LAN most likely reach this machine at, or None.

    Args:
        route_table: text of ``/proc/net/route`` (None: read it; unreadable counts as empty).
        interfaces: interface name -> its IPv4 addresses (None: :func:`interface_ipv4s`).
    """
    if route_table is None:
        try:
            route_table = ROUTE_TABLE.read_text(encoding="ascii", errors="replace")
        except OSError:
            route_table = ""
    if interfaces is None:
        interfaces = interface_ipv4s()
    for iface in default_route_interfaces(route_table):
        for ip in _ipv4s(interfaces.get(iface, ())):
            if _usable(ip):
                return str(ip)
    candidates = [ip for entries in interfaces.values() for ip in _ipv4s(entries)
                  if _usable(ip)]
    for ip in candidates:
        if ip.is_private:
            return str(ip)
    return str(candidates[0]) if candidates else None


def is_loopback_host(host: str) -> bool:
    """True for names a phone cannot use to reach this machine: ``localhost`` (and
    ``*.localhost``, RFC 6761 §6.3), 127.0.0.0/8, ``::1``, the unspecified addresses.

    Args:
        host: a host name or IP literal without port (IPv6 with or without brackets).
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def lan_host(route_table: str | None = None,
             interfaces: Mapping[str, Iterable[str]] | None = None,
             hostname: str | None = None) -> str:
    """:func:`lan_ipv4`, else ``<hostname>.local`` (the short host name, mDNS).

    Args:
        route_table, interfaces: as :func:`lan_ipv4`.
        hostname: this machine's name (None: :func:`socket.gethostname`).
    """
    ip = lan_ipv4(route_table, interfaces)
    if ip is not None:
        return ip
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    return f"{name or 'climbd'}.local"
