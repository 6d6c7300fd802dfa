"""Client of the local admin socket (:mod:`climbd.api.admin_socket`), standard library only:
``climbd token``, ``climbd pair`` and ``climbd admin-password`` use it, and so do the tests.

Only root and the daemon's own user get answers (file mode 0600 and SO_PEERCRED).
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

__all__ = ["AdminClient", "AdminSocketError"]


class AdminSocketError(Exception):
    """The admin socket refused a request or cannot be reached.

    Attributes:
        status: the HTTP status, or 0 when the socket could not be reached.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """Talks to the admin socket at ``path`` (``<state dir>/admin.sock``).

    Args:
        path: the socket file.
        timeout: seconds per request (setting a password runs scrypt: ~1 s).
    """

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = str(path)
        self.timeout = timeout

    def request(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; returns the parsed JSON answer.

        Raises:
            AdminSocketError: not reachable (status 0: no daemon, or no permission to the
                socket file) or refused (the daemon's status and message).
        """
        conn = _UnixConnection(self.path, self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, route, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise AdminSocketError(0, f"cannot reach the daemon's admin socket {self.path}: "
                                   f"{exc.strerror or exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = {"message": raw[:200].decode("utf-8", "replace")}
        if resp.status >= 400:
            message = data.get("message", resp.reason) if isinstance(data, dict) else resp.reason
            raise AdminSocketError(resp.status, str(message))
        return data

    def create_token(self, name: str, scope: str = "trigger") -> dict[str, Any]:
        """A new API token: ``{"id", "name", "scope", "token", ...}`` (the secret once)."""
        return dict(self.request("POST", "/v1/tokens", {"name": name, "scope": scope}))

    def tokens(self) -> list[dict[str, Any]]:
        """Every API token (no secrets)."""
        return list(self.request("GET", "/v1/tokens")["items"])

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        """Revoke a token (its live connections close)."""
        return dict(self.request("DELETE", f"/v1/tokens/{int(token_id)}"))

    def devices(self) -> list[dict[str, Any]]:
        """Every paired device."""
        return list(self.request("GET", "/v1/devices")["items"])

    def remove_device(self, device_id: int) -> dict[str, Any]:
        """Unpair a device (its live connections close)."""
        return dict(self.request("DELETE", f"/v1/devices/{int(device_id)}"))

    def pairing_code(self, kind: str = "device") -> dict[str, Any]:
        """A new 12-digit single-use code: ``{"code": "1234-5678-9012", "ttl_s", ...}``."""
        return dict(self.request("POST", "/v1/pairing-codes", {"kind": kind}))

    def set_admin_password(self, password: str) -> None:
        """Set or reset the admin password (no current password needed here)."""
        self.request("PUT", "/v1/admin-password", {"password": password})

    def health(self) -> dict[str, Any]:
        """The full health report."""
        return dict(self.request("GET", "/v1/health"))
