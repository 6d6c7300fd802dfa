"""Typed application state keys (aiohttp ``AppKey``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from climbd.daemon import Daemon

__all__ = ["DAEMON"]

#: The running :class:`climbd.daemon.Daemon` the handlers talk to.
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
