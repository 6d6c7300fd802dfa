"""Secrets: random tokens, their SHA-256 digests, CSRF tokens, pairing codes, passwords.

Sources of the constants:

- Tokens (device cookies, admin sessions, API tokens) carry :data:`TOKEN_BYTES` = 32 random
  bytes (256 bits) from :mod:`secrets`; OWASP's Session Management Cheat Sheet asks for at
  least 64 bits of entropy. Only their SHA-256 is stored: a copy of the database yields no
  usable token, and a fast hash is enough for a 256-bit random secret (no dictionary to
  try), unlike a password.
- CSRF tokens are HMAC-SHA256 (RFC 2104) of a fixed label keyed by the HttpOnly cookie they
  belong to: the "signed double-submit cookie" of OWASP's CSRF Prevention Cheat Sheet, bound
  to the session and with no server-side state.
- Pairing codes are :data:`PAIRING_CODE_DIGITS` = 8 decimal digits (10^8 values), single
  use, short-lived, guessed at a globally rate-limited pace (see THREAT_MODEL.md for the
  odds). Codes from ``climbd pair`` (the local admin channel) have
  :data:`CLI_CODE_DIGITS` = 12 digits (10^12 values): they are guessed under a per-client
  budget only, so a flood against 8-digit codes cannot block them.
- The admin password (or PIN) is stretched with scrypt (RFC 7914) from :mod:`hashlib`,
  :data:`SCRYPT_N` = 2^14, :data:`SCRYPT_R` = 8, :data:`SCRYPT_P` = 5: one of the equivalent
  settings of OWASP's Password Storage Cheat Sheet (same CPU cost as N=2^17, r=8, p=1, but
  16 MiB of memory — 128·N·r bytes, RFC 7914 §2 — instead of 128 MiB, which suits a
  Raspberry Pi). About 0.7 s per check on the 2-core x86 CI machine. Salt:
  :data:`SALT_BYTES` = 16 (128 bits, NIST SP 800-132 §5.1). The parameters are stored with
  each hash, so they can be raised later without invalidating old hashes.
- Passwords: at least :data:`PASSWORD_MIN` = 8 characters (NIST SP 800-63B §5.1.1.2), at
  most :data:`PASSWORD_MAX` = 256, Unicode-normalised with NFKC before hashing (same
  section).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass

__all__ = [
    "PAIRING_CODE_DIGITS",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "ScryptParams",
    "code_hash",
    "csrf_token",
    "format_code",
    "hash_password",
    "new_pairing_code",
    "new_token",
    "normalize_code",
    "token_hash",
    "verify_password",
]

#: Random bytes in every bearer secret (256 bits).
TOKEN_BYTES = 32
#: Prefix of API tokens, so secret scanners and humans recognise them.
API_TOKEN_PREFIX = "climbd_"
#: Digits in a pairing code.
PAIRING_CODE_DIGITS = 8
#: Digits in a pairing code made by ``climbd pair`` on the appliance.
CLI_CODE_DIGITS = 12
#: scrypt cost parameters (see the module docstring).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
#: scrypt output length, bytes.
SCRYPT_DKLEN = 32
#: Salt length, bytes.
SALT_BYTES = 16
#: Password length bounds, characters.
PASSWORD_MIN = 8
PASSWORD_MAX = 256
_CSRF_LABEL = b"climbd csrf v1"


def new_token(prefix: str = "") -> str:
    """A new random bearer secret: ``prefix`` + 43 URL-safe base64 characters (256 bits)."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """Hex SHA-256 of a token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_token(cookie_value: str) -> str:
    """The CSRF token that goes with an HttpOnly session cookie value (43 characters)."""
    mac = hmac.new(cookie_value.encode("utf-8", "surrogateescape"), _CSRF_LABEL,
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def csrf_matches(header: str | None, cookie_values: list[str]) -> bool:
    """True if ``header`` is the CSRF token of one of the session cookies (constant time)."""
    if not header or len(header) > 128:
        return False
    ok = False
    for value in cookie_values:
        ok |= hmac.compare_digest(header.encode("utf-8", "surrogateescape"),
                                  csrf_token(value).encode("ascii"))
    return ok


def new_pairing_code(digits: int = PAIRING_CODE_DIGITS) -> str:
    """A new pairing code: ``digits`` (8 or 12) random decimal digits."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def normalize_code(text: str) -> str | None:
    """The ASCII digits of a typed code (spaces and dashes ignored) if it has 8 or 12 of
    them, else None."""
    if len(text) > 4 * CLI_CODE_DIGITS:
        return None
    digits = "".join(c for c in text if c not in " -\t")
    if len(digits) not in (PAIRING_CODE_DIGITS, CLI_CODE_DIGITS) or not (
            digits.isascii() and digits.isdigit()):
        return None
    return digits


def format_code(code: str) -> str:
    """``12345678`` -> ``1234-5678``, ``123456789012`` -> ``1234-5678-9012`` (easier to
    read aloud and to type)."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def code_hash(kind: str, code: str) -> str:
    """Hex SHA-256 of a pairing code and its kind (``device`` or ``admin``)."""
    return hashlib.sha256(f"climbd pairing v1:{kind}:{code}".encode()).hexdigest()


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters (RFC 7914 §2): CPU/memory cost ``n``, block size ``r``,
    parallelisation ``p``."""

    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @property
    def memory(self) -> int:
        """Bytes of memory one hash needs (128 · n · r)."""
        return 128 * self.n * self.r


#: The parameters new hashes are made with (tests may lower them).
DEFAULT_SCRYPT = ScryptParams()


def _normalize_password(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(_normalize_password(password), salt=salt, n=params.n, r=params.r,
                          p=params.p, maxmem=2 * params.memory + 2**20, dklen=SCRYPT_DKLEN)


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of a password. Slow on purpose: call it in a thread.

    Raises:
        ValueError: the password is shorter than :data:`PASSWORD_MIN` or longer than
            :data:`PASSWORD_MAX` characters.
    """
    check_password_rules(password)
    params = params or DEFAULT_SCRYPT
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, params)
    b64 = base64.b64encode
    return (f"scrypt${params.n}${params.r}${params.p}$"
            f"{b64(salt).decode()}${b64(digest).decode()}")


def check_password_rules(password: str) -> None:
    """Raises ValueError if the password is too short or too long."""
    n = len(unicodedata.normalize("NFKC", password))
    if n < PASSWORD_MIN:
        raise ValueError(f"the password must have at least {PASSWORD_MIN} characters")
    if n > PASSWORD_MAX:
        raise ValueError(f"the password must have at most {PASSWORD_MAX} characters")


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches a hash made by :func:`hash_password` (constant-time
    comparison). Slow on purpose: call it in a thread. A malformed hash never matches."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        params = ScryptParams(int(n), int(r), int(p))
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except ValueError:
        return False
    if len(password) > 4 * PASSWORD_MAX:  # never stretch a megabyte of input
        return False
    return hmac.compare_digest(_scrypt(password, salt, params), expected)
