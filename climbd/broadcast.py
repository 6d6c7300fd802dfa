"""Fan-out of a stream (encoded packets, poses) from worker threads to asyncio consumers.

One producer (a capture, encoder or pose thread) calls :meth:`Broadcast.publish_threadsafe`;
any number of consumers on the event loop iterate a :class:`Subscription`. Each subscription
has its own bounded queue and overflow policy, so a slow consumer never slows the producer or
the other consumers:

- ``"latest"``: keep only the newest ``maxsize`` items (latest wins; live viewers, landmarks).
- ``"fail"``: never drop silently; on overflow the subscription is closed with
  ``overflowed=True`` (the recorder, which must see every video packet or fail loudly).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

__all__ = ["Broadcast", "Subscription"]


class Subscription(Generic[T]):
    """One consumer's view of a :class:`Broadcast`; async-iterate it or call :meth:`get`."""

    def __init__(self, owner: Broadcast[T], maxsize: int, policy: Literal["latest", "fail"]):
        self._owner = owner
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._policy = policy
        self._event = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.dropped = 0

    def _push(self, item: T) -> None:
        if self.closed:
            return
        if len(self._items) >= self._maxsize:
            if self._policy == "fail":
                self.overflowed = True
                self.close()
                return
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._event.set()

    def get_nowait(self) -> T | None:
        """Pop the oldest queued item, or ``None`` if the queue is empty."""
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        """Wait for the next item.

        Raises:
            EOFError: the subscription (or the broadcast) was closed and is drained.
        """
        while not self._items:
            if self.closed:
                raise EOFError("subscription closed")
            self._event.clear()
            await self._event.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving; queued items can still be read. Idempotent."""
        if not self.closed:
            self.closed = True
            self._owner._subs.discard(self)
            self._event.set()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except EOFError:
                return


class Broadcast(Generic[T]):
    """A stream of items published from any thread and fanned out on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._subs: set[Subscription[T]] = set()
        self.published = 0

    def subscribe(
        self, maxsize: int = 1, policy: Literal["latest", "fail"] = "latest"
    ) -> Subscription[T]:
        """Add a consumer. Must be called on the event loop's thread."""
        sub: Subscription[T] = Subscription(self, maxsize, policy)
        self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        """Number of open subscriptions."""
        return len(self._subs)

    def publish(self, item: T) -> None:
        """Deliver ``item`` to every subscription. Call on the event loop's thread."""
        self.published += 1
        for sub in list(self._subs):
            sub._push(item)

    def publish_threadsafe(self, item: T) -> None:
        """Deliver ``item`` from a worker thread (scheduled onto the loop)."""
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self.publish, item)

    def close(self) -> None:
        """Close every subscription (consumers drain, then see end of stream)."""
        for sub in list(self._subs):
            sub.close()
