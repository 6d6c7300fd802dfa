"""Pure parts of the access-control layer: token buckets, secrets, host and origin checks,
visibility scope, access ranks."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climbd.api.openapi import ACCESS, operation
from climbd.config import SecurityConfig, parse_config
from climbd.errors import ConfigError, SessionNotFound
from climbd.security import crypto
from climbd.security.access import ACCESS_RANK, Principal
from climbd.security.hosts import (
    HostPolicy,
    is_loopback_address,
    is_loopback_host,
    origin_of,
    split_host,
)
from climbd.security.ratelimit import KeyedLimiter, TokenBucket, client_key
from climbd.security.scope import SYSTEM, Viewer, check_visible, session_filter_sql, viewing
from climbd.security.store import Device

pytestmark = pytest.mark.unit

# -- token buckets -------------------------------------------------------------------------


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after(0.0) == pytest.approx(0.5)
    assert not b.take(0.4)
    assert b.take(0.5)
    assert b.take(100.0) and b.tokens == pytest.approx(2.0)  # capped at burst


def test_bucket_refund_and_bad_parameters() -> None:
    b = TokenBucket(1.0, 1, 0.0)
    assert b.take(0.0) and not b.take(0.0)
    b.refund(0.0)
    assert b.take(0.0)
    for rate, burst in ((0, 1), (1, 0), (float("inf"), 1), (1, float("nan"))):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, 0.0)


@settings(max_examples=200, deadline=None, database=None)
@given(rate=st.floats(0.1, 100), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60))
def test_bucket_never_allows_more_than_burst_plus_rate_times_time(
        rate: float, burst: int, gaps: list[float]) -> None:
    b = TokenBucket(rate, burst, 0.0)
    now = allowed = 0.0
    for gap in gaps:
        now += gap
        allowed += b.take(now)
    assert allowed <= burst + rate * now + 1e-6


def test_keyed_limiter_is_per_key_and_bounded() -> None:
    t = [0.0]
    lim = KeyedLimiter(rate=1.0, burst=2, max_keys=3, clock=lambda: t[0])
    assert lim.take("a") == 0 and lim.take("a") == 0
    assert lim.take("a") == pytest.approx(1.0)
    assert lim.take("b") == 0  # another client is not affected
    for k in ("c", "d", "e"):
        lim.take(k)
    assert len(lim) == 3 and lim.refused == 1
    t[0] = 1.0
    assert lim.take("e") == 0


@pytest.mark.parametrize(("address", "key"), [
    ("192.168.1.20", "192.168.1.20"),
    ("::ffff:10.0.0.7", "10.0.0.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    (None, "local"), ("", "local"), ("garbage", "local"),
])
def test_client_key(address: str | None, key: str) -> None:
    assert client_key(address) == key


# -- secrets -------------------------------------------------------------------------------


def test_tokens_are_long_random_and_hashed() -> None:
    a, b = crypto.new_token(), crypto.new_token(crypto.API_TOKEN_PREFIX)
    assert len(a) == 43 and b.startswith("climbd_") and a != b[7:]
    assert len(crypto.token_hash(a)) == 64 and crypto.token_hash(a) != crypto.token_hash(b)


def test_csrf_token_is_bound_to_its_cookie() -> None:
    t = crypto.csrf_token("cookie-1")
    assert crypto.csrf_matches(t, ["other", "cookie-1"])
    assert not crypto.csrf_matches(t, ["cookie-2"])
    assert not crypto.csrf_matches(None, ["cookie-1"])
    assert not crypto.csrf_matches("", ["cookie-1"])
    assert not crypto.csrf_matches(t, [])
    assert not crypto.csrf_matches("x" * 1000, ["cookie-1"])


def test_pairing_codes() -> None:
    codes = {crypto.new_pairing_code() for _ in range(200)}
    assert len(codes) > 190 and all(len(c) == 8 and c.isdigit() for c in codes)
    assert crypto.normalize_code(" 1234-5678 ") == "12345678"
    for bad in ("1234567", "123456789", "1234-567x", "١٢٣٤٥٦٧٨", "", "-" * 100):
        assert crypto.normalize_code(bad) is None
    assert crypto.format_code("12345678") == "1234-5678"
    assert crypto.code_hash("device", "12345678") != crypto.code_hash("admin", "12345678")


def test_password_hash_roundtrip_and_rules() -> None:
    fast = crypto.ScryptParams(n=2**10, r=8, p=1)
    h = crypto.hash_password("Ｃlimb hard 42", fast)  # fullwidth C: NFKC-normalised
    assert h.startswith("scrypt$1024$8$1$")
    assert crypto.verify_password("Climb hard 42", h)
    assert not crypto.verify_password("climb hard 42", h)
    assert not crypto.verify_password("x", "not a hash")
    assert not crypto.verify_password("x", "bcrypt$1$2$3$4$5")
    with pytest.raises(ValueError, match="at least 8"):
        crypto.hash_password("1234567", fast)
    with pytest.raises(ValueError, match="at most"):
        crypto.hash_password("x" * 257, fast)
    assert crypto.DEFAULT_SCRYPT.memory == 16 * 2**20  # 128 * 2^14 * 8


# -- hosts and origins ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "parsed"), [
    ("192.168.1.20:8080", ("192.168.1.20", 8080)),
    ("[::1]:8080", ("::1", 8080)),
    ("[fe80::1]", ("fe80::1", None)),
    ("Climbwall.Local.", ("climbwall.local", None)),
    ("localhost:1", ("localhost", 1)),
    ("", None), (None, None), ("a b", None), ("x:99999", None), ("x:", None), ("[::1", None),
    ("::1", None), ("evil.example/x", None), ("a@b", None), ("x;y.local", None),
    ("[zz::1]:80", None), ("host:80:90", None),
])
def test_split_host(value: str | None, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(value) == parsed


def test_host_policy_default_patterns() -> None:
    policy = HostPolicy.from_config(SecurityConfig().allowed_hosts, hostname="wallbox.lan")
    for ok in ("192.168.1.20", "::1", "10.0.0.1", "localhost", "wallbox", "wallbox.lan",
               "climbwall.local", "a.b.local"):
        assert policy.allows(ok), ok
    for bad in ("evil.example", "local", "wallbox.evil", "localhost.evil.com", "xlocal",
                "192.168.1.20.nip.io"):
        assert not policy.allows(bad), bad
    custom = HostPolicy.from_config(["climb.example.org"], hostname="x")
    assert custom.allows("climb.example.org") and not custom.allows("10.0.0.1")


def test_loopback_checks() -> None:
    assert is_loopback_host("localhost") and is_loopback_host("127.0.0.2")
    assert is_loopback_host("::1") and is_loopback_host("app.localhost")
    assert not is_loopback_host("192.168.1.2") and not is_loopback_host("localhost.evil")
    assert is_loopback_address("::ffff:127.0.0.1") and is_loopback_address("127.1.2.3")
    assert not is_loopback_address("10.0.0.1") and not is_loopback_address(None)


def test_origin_of() -> None:
    assert origin_of("http://192.168.1.2:8080") == ("http", "192.168.1.2", 8080)
    assert origin_of("https://wall.local/page?x") == ("https", "wall.local", 443)
    assert origin_of("http://[::1]") == ("http", "::1", 80)
    for bad in ("null", "", None, "file:///x", "http://user@host", "javascript:alert(1)"):
        assert origin_of(bad) is None


def test_allowed_hosts_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"security\.allowed_hosts"):
        parse_config({"security": {"allowed_hosts": ["bad host; x"]}})
    assert parse_config({"security": {"allowed_hosts": ["*.example.org"]}})


# -- visibility scope and roles ------------------------------------------------------------


class _Rec:
    def __init__(self, private: bool, owner: int | None):
        self.id, self.private, self.owner_device_id = 7, private, owner


def test_visibility_rules() -> None:
    pub, mine, theirs, orphan = _Rec(False, None), _Rec(True, 1), _Rec(True, 2), _Rec(True, None)
    # fail closed: with no viewer (outside a request) nothing is visible ...
    for rec in (pub, theirs):
        with pytest.raises(SessionNotFound):
            check_visible(rec)
    assert session_filter_sql() == ("0", ())
    with viewing(SYSTEM):  # ... unless the code says it acts for the appliance
        assert check_visible(theirs) is theirs and session_filter_sql() == ("1", ())
    with viewing(Viewer(device_id=1)):
        assert check_visible(pub) and check_visible(mine)
        for hidden in (theirs, orphan):
            with pytest.raises(SessionNotFound, match="no session with id 7"):
                check_visible(hidden)
        assert session_filter_sql() == ("(private = 0 OR owner_device_id = ?)", (1,))
    with viewing(Viewer()):
        assert session_filter_sql("s") == ("s.private = 0", ())
    with viewing(Viewer(sees_all=True)):
        assert check_visible(orphan) and session_filter_sql() == ("1", ())


async def test_viewer_is_inherited_by_tasks_created_in_a_request() -> None:
    async def probe() -> Viewer | None:
        from climbd.security.scope import current

        return current()

    with viewing(Viewer(device_id=5)):
        task = asyncio.create_task(probe())
    assert await task == Viewer(device_id=5)


def test_access_ranks_cover_every_declared_value() -> None:
    assert set(ACCESS_RANK) == set(ACCESS)
    dev = Device(1, "t", 0, 0)
    assert Principal("wall", "cookie", device=dev).may("token")
    assert not Principal("token", "bearer").may("wall")
    assert not Principal().may("token") and Principal().may("share token")
    assert Principal("admin", "loopback").viewer.sees_all
    assert Principal("wall", "cookie", device=dev).viewer == Viewer(1, False)
    with pytest.raises(ValueError, match="access must be one of"):
        operation("x", access="wall-ish")
