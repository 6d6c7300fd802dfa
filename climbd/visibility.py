"""Who is looking: the session-visibility scope of the running request.

A session marked ``private`` is visible only to the paired device that owns it
(``sessions.owner_device_id``) and to the admin. The security middleware sets a
:class:`Viewer` for every HTTP request in a :class:`~contextvars.ContextVar`; the session
catalog (:class:`climbd.storage.database.Database`) filters its user-facing reads by it, so
every handler that looks a session up — metadata, poses, video, exports, replay, ghost, a
WebSocket that opens a session — sees exactly what the caller may see, without knowing about
authentication.

Rules for code outside a request (fail closed):

- No viewer set means *nobody*: no session is visible (:func:`check_visible` raises
  :class:`~climbd.errors.SessionNotFound`, :func:`session_filter_sql` matches no row). Code
  that acts for the appliance itself — the daemon's background services (recorder,
  retention, GPIO, export start-up), the CLI, benchmarks — says so explicitly with
  ``viewing(SYSTEM)``; :class:`climbd.daemon.Daemon` builds its services inside it, while
  the HTTP server is started outside it, so a request sees only what the security
  middleware's ``viewing(principal.viewer)`` grants.
- Tasks created inside a request inherit its viewer (asyncio copies the context when a task
  is created), e.g. aiortc's transport tasks started by ``POST /api/whep`` carry the viewer of
  the device that opened the live view. Work that outlives a request and acts for a client
  should capture :func:`current` at request time and re-enter it with :func:`viewing`.

This module is pure (standard library and :mod:`climbd.errors` only): the storage layer
filters by it and the security layer sets it, neither importing the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from climbd.errors import SessionNotFound

__all__ = ["SYSTEM", "Viewer", "check_visible", "current", "session_filter_sql", "viewing"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """The caller of one request, as far as session visibility goes.

    Attributes:
        device_id: the paired device making the request, or None (anonymous, API token,
            admin without a device cookie).
        sees_all: the admin (or a trusted local process): private sessions included.
    """

    device_id: int | None = None
    sees_all: bool = False

    def can_see(self, private: bool, owner_device_id: int | None) -> bool:
        """True if a session with these ownership columns is visible to this viewer."""
        if not private or self.sees_all:
            return True
        return self.device_id is not None and owner_device_id == self.device_id


#: The appliance itself (background services, CLI): everything, private sessions included.
SYSTEM = Viewer(device_id=None, sees_all=True)

#: None = nobody: outside a request, and without an explicit ``viewing(SYSTEM)``, nothing
#: is visible.
_CURRENT: ContextVar[Viewer | None] = ContextVar("climbd_viewer", default=None)


def current() -> Viewer | None:
    """The viewer of the running code, or None (nobody: nothing is visible)."""
    return _CURRENT.get()


@contextlib.contextmanager
def viewing(viewer: Viewer | None) -> Iterator[None]:
    """Run the body as ``viewer`` (:data:`SYSTEM` for the appliance; None = nobody)."""
    token = _CURRENT.set(viewer)
    try:
        yield
    finally:
        _CURRENT.reset(token)


R = TypeVar("R")


def check_visible(record: R) -> R:
    """Return ``record`` (anything with ``id``, ``private`` and ``owner_device_id``) if the
    current viewer may see it.

    Raises:
        SessionNotFound: it is private and not the viewer's, or there is no viewer at all —
            exactly the error of a session that does not exist, so a probe cannot tell
            them apart.
    """
    viewer = _CURRENT.get()
    rec: Any = record
    if viewer is None or not viewer.can_see(bool(getattr(rec, "private", False)),
                                            getattr(rec, "owner_device_id", None)):
        raise SessionNotFound(rec.id)
    return record


def session_filter_sql(alias: str = "") -> tuple[str, tuple[Any, ...]]:
    """An SQL condition on the ``sessions`` table (``alias.`` prefix if given) that keeps the
    rows the current viewer may see, and its parameters: ``("1", ())`` for a viewer that
    sees all, ``("0", ())`` for nobody."""
    viewer = _CURRENT.get()
    if viewer is None:
        return "0", ()
    if viewer.sees_all:
        return "1", ()
    p = f"{alias}." if alias else ""
    if viewer.device_id is None:
        return f"{p}private = 0", ()
    return f"({p}private = 0 OR {p}owner_device_id = ?)", (viewer.device_id,)
