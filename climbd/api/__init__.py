"""HTTP API of the daemon (aiohttp). Stage modules never import from here."""

from climbd.api.app import create_app

__all__ = ["create_app"]
