"""Token buckets: per-client and global rate limits (pure; the clock is injected).

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second; an action costs
one token and is refused when the bucket is empty (the classic token bucket, e.g. RFC 2697
§1 "token bucket", RFC 4115). :class:`KeyedLimiter` keeps one bucket per client key in a
bounded LRU map, so a flood of new addresses costs bounded memory (an evicted key starts
again with a full bucket: the memory bound wins over precision; global buckets cap what
many keys can do together).

Clients are keyed by :func:`client_key`: the IPv4 address, or the IPv6 /64 prefix (a host
usually owns a whole /64, RFC 6177 §2 / RFC 7421, and can pick any address in it).

Everything here is synchronous and takes ``now`` (seconds, monotonic) so it can be tested
without sleeping; the default clock is :func:`time.monotonic`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["KeyedLimiter", "TokenBucket", "client_key"]


class TokenBucket:
    """One token bucket.

    Args:
        rate: tokens added per second (> 0).
        burst: bucket size, tokens (>= 1): how many actions may happen back to back.
        now: the clock reading the bucket starts at (full).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float):
        if not (rate > 0 and math.isfinite(rate)) or not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = float(now)

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if the bucket has them; False (nothing spent) otherwise."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def refund(self, now: float, cost: float = 1.0) -> None:
        """Give back tokens (e.g. a login attempt that succeeded), never above ``burst``."""
        self._refill(now)
        self.tokens = min(self.burst, self.tokens + cost)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        self._refill(now)
        return max(0.0, (cost - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        """True when the bucket is full (an idle key that can be forgotten)."""
        self._refill(now)
        return self.tokens >= self.burst


class KeyedLimiter:
    """One :class:`TokenBucket` per key (client), at most ``max_keys`` of them.

    Args:
        rate: tokens per second of each key's bucket.
        burst: size of each key's bucket.
        max_keys: buckets kept; the least recently used is dropped beyond it.
        clock: seconds, monotonic.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        TokenBucket(rate, burst, 0.0)  # validate early
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        #: actions refused so far (for health/tests)
        self.refused = 0

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend a token of ``key``: 0.0 if allowed, else the seconds to wait (> 0)."""
        now = self.clock()
        bucket = self._bucket(key, now)
        if bucket.take(now, cost):
            return 0.0
        self.refused += 1
        return max(bucket.retry_after(now, cost), 1e-3)

    def refund(self, key: str, cost: float = 1.0) -> None:
        """Give a token back to ``key`` (no-op for a key not tracked any more)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.refund(self.clock(), cost)

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(address: str | None) -> str:
    """The rate-limit key of a peer address: IPv4 as is (also when IPv4-mapped), IPv6 by its
    /64 prefix; anything unparsable (a Unix socket) as ``"local"``."""
    if not address:
        return "local"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
