"""Host allow-list (DNS rebinding) and same-origin checks.

DNS rebinding: a web page on ``evil.example`` makes its name resolve to the appliance's LAN
address, and the victim's browser then treats the appliance as same-origin with the
attacker's page. The browser still sends ``Host: evil.example``, so refusing unknown host
names defeats it (the standard defence, e.g. go2rtc and Home Assistant after their rebinding
reports). An IP literal cannot be rebound, ``localhost`` and the machine's own name are
resolved locally, and ``*.local`` names are multicast DNS (RFC 6762), answered only on the
local link.

Patterns of ``security.allowed_hosts``: ``$ip`` (any IPv4/IPv6 literal), ``$hostname`` (this
machine's name, short and fully qualified), an exact name (``climbwall.example.org``) or
``*.`` and a suffix (``*.local`` matches ``wall.local``, not ``local``). Matching ignores
case, a trailing dot and the port.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

__all__ = ["HostPolicy", "is_loopback_address", "is_loopback_host", "origin_of", "split_host"]

_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


def split_host(value: str | None) -> tuple[str, int | None] | None:
    """``"Host"`` header value -> (lower-case host without brackets or trailing dot, port).

    None if it is not a plausible ``host[:port]`` (RFC 9110 §7.2, RFC 3986 §3.2.2).
    """
    if not value or len(value) > 261 or any(c in value for c in " \t\r\n/\\@?#"):
        return None
    value = value.strip().lower()
    port: str | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    else:
        if value.count(":") > 1:
            return None
        host, _, port_text = value.partition(":")
        port = port_text if _ else None
    if port is not None and not (port.isascii() and port.isdigit() and 0 < len(port) <= 5
                                 and 0 < int(port) <= 65535):
        return None
    host = host.rstrip(".")
    if not host:
        return None
    if not _is_ip(host) and not _HOSTNAME.fullmatch(host):
        return None  # names are letters, digits, '-' and '.' (RFC 1123 §2.1)
    return host, int(port) if port is not None else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` (and ``*.localhost``, RFC 6761 §6.3) and loopback IP
    literals."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return is_loopback_address(host)


def is_loopback_address(address: str | None) -> bool:
    """True if a peer address is a loopback IP (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` names the appliance answers to.

    Args:
        patterns: ``security.allowed_hosts`` entries (see the module docstring).
        hostname: this machine's name (default: :func:`socket.gethostname`).
    """

    patterns: tuple[str, ...]
    hostnames: frozenset[str]

    @classmethod
    def from_config(cls, patterns: list[str], hostname: str | None = None) -> HostPolicy:
        """Build the policy; ``$hostname`` expands to the short and the full name."""
        name = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
        names = {name, name.split(".", 1)[0]} if name else set()
        return cls(tuple(p.lower().rstrip(".") for p in patterns), frozenset(names))

    def allows(self, host: str) -> bool:
        """True if the host name (from :func:`split_host`) may be served."""
        for p in self.patterns:
            if p == "$ip":
                if _is_ip(host):
                    return True
            elif p == "$hostname":
                if host in self.hostnames:
                    return True
            elif p.startswith("*."):
                if host.endswith(p[1:]) and len(host) > len(p) - 1:
                    return True
            elif host == p:
                return True
        return False


def origin_of(value: str | None) -> tuple[str, str, int] | None:
    """``Origin``/``Referer`` value -> (scheme, host, port) with the scheme's default port
    filled in; None for ``null``, opaque or malformed origins (RFC 6454 §7)."""
    if not value or len(value) > 2048:
        return None
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:
        return None
    parts = split_host(authority)
    if parts is None:
        return None
    host, port = parts
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)
