"""Share links: short-lived, single-purpose tokens that hand one export to a phone.

A share link is ``<base_url>/s/<token>``. The token is 128 random bits
(:func:`secrets.token_urlsafe`, 22 characters), shown once when the link is made and never
stored: the database keeps its SHA-256 (:func:`hash_token`), so neither a copy of the
database nor the log can be turned back into a working link. A link opens exactly one
export (its page and its file), expires after ``share.ttl_s`` (24 h by default) and can be
revoked earlier. There is no pairing and no cookie: holding the link is the permission,
which is why it is scoped this narrowly.

:func:`base_url_for` picks the host put in the link: ``share.base_url`` when configured,
else the Host header of the tablet's request (the tablet reached the appliance through that
address, so a phone on the same network can too) unless it is a loopback name (a kiosk
browser on the appliance itself uses ``localhost``): then this machine's LAN address or
``<hostname>.local`` (:func:`climbd.lan.lan_host`, from local tables, no traffic) with the
request's port. A link never names 127.0.0.1, ``localhost`` or ``::1``. :func:`qr_svg`
draws the link as a QR code (segno, SVG, offline).

No HTTP here; the routes are in :mod:`climbd.api.shares`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Callable

import segno

from climbd import lan

__all__ = [
    "TOKEN_BYTES",
    "base_url_for",
    "hash_token",
    "looks_like_token",
    "new_token",
    "qr_svg",
    "share_url",
    "token_matches",
]

#: Random bytes in a token (128 bits).
TOKEN_BYTES = 16
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def new_token() -> str:
    """A fresh URL-safe random token (22 characters for 16 bytes)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: what the database stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(token: str) -> bool:
    """Cheap shape check before any lookup (URL-safe base64, 16 to 64 characters)."""
    return bool(_TOKEN_RE.match(token))


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a token with a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def _split_host(host: str) -> tuple[str, str]:
    """``("name", ":port")`` of a Host header value (port part may be empty)."""
    if host.startswith("["):
        end = host.index("]") + 1
        return host[:end], host[end:]
    name, sep, port = host.rpartition(":")
    return (name, sep + port) if sep else (host, "")


def base_url_for(configured: str, host_header: str | None, scheme: str = "http",
                 lan_host: Callable[[], str] | None = None) -> str:
    """The ``scheme://host[:port]`` of share links.

    Args:
        configured: ``share.base_url`` ('' = derive from the request).
        host_header: the request's Host header, e.g. ``192.168.1.20:8080``.
        scheme: the request's scheme.
        lan_host: this machine's LAN address or mDNS name, used instead of a loopback Host
            (None: :func:`climbd.lan.lan_host`).

    Raises:
        ValueError: nothing configured and the Host header is missing or malformed.
    """
    if configured:
        return configured.rstrip("/")
    host = (host_header or "").strip()
    if not host or not _HOST_RE.match(host):
        raise ValueError(f"cannot build a share link from the Host header {host!r}: set "
                         "share.base_url in the configuration")
    name, port = _split_host(host)
    if lan.is_loopback_host(name):
        name = (lan_host or lan.lan_host)()
    return f"{scheme}://{name}{port}"


def share_url(base_url: str, token: str) -> str:
    """The link a phone opens: ``<base_url>/s/<token>``."""
    return f"{base_url.rstrip('/')}/s/{token}"


def qr_svg(url: str, scale: int = 6) -> bytes:
    """A QR code of ``url`` as a standalone SVG document (error correction M, 4-module
    quiet zone, black on white)."""
    buf = io.BytesIO()
    segno.make(url, error="m", micro=False).save(
        buf, kind="svg", scale=scale, border=4, dark="#000", light="#fff",
        title="Scan to open the clip")
    return buf.getvalue()
