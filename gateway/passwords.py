"""Sender passwords: salted scrypt hashes and constant-time checks.

An `[[accounts]]` entry proves who a sender is with `password` (plain text)
or `password_hash` (made by `optout-sidecar hash-password`). A hash is one
self-describing string,

    scrypt$N$r$p$<salt, base64>$<hash, base64>

so its cost parameters can be raised later without breaking old hashes.
The defaults (N = 2**14, r = 8, p = 1: 16 MiB and tens of milliseconds per
check) are scrypt's interactive-login parameters: expensive for someone who
stole the config file, affordable for a sidecar checking a few binds a
second (checks run in a worker thread, never on the event loop).

No I/O and no asyncio here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = [
    "DEFAULT_N",
    "PasswordHashError",
    "ScryptHash",
    "check_plain",
    "hash_password",
    "parse_hash",
    "verify_password",
]

DEFAULT_N = 1 << 14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Bounds on what a config file may ask for, so a typo (or a hostile file)
# cannot make every bind cost seconds or gigabytes.
_MAX_N = 1 << 20
_MAX_R = 32
_MAX_P = 16
_MAX_MEMORY = 1 << 30


class PasswordHashError(ValueError):
    """A `password_hash` string that is not one `hash_password` could make."""


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """A parsed `password_hash`."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"scrypt${self.n}${self.r}${self.p}${salt}${digest}"


def _derive(password: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # scrypt needs about 128 * N * r bytes; maxmem must allow it (the default
    # 32 MiB would refuse N = 2**15, r = 8).
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=min(_MAX_MEMORY, 256 * n * r * p + (1 << 20)))


def hash_password(
    password: str | bytes,
    *,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    salt: bytes | None = None,
) -> str:
    """A new salted scrypt hash of `password`, as the string the config takes."""
    secret = password.encode() if isinstance(password, str) else password
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    _check_params(n, r, p)
    return ScryptHash(n, r, p, salt, _derive(secret, n, r, p, salt, HASH_BYTES)).encode()


def parse_hash(encoded: str) -> ScryptHash:
    """Read a `password_hash` string; PasswordHashError says what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PasswordHashError("expected scrypt$N$r$p$salt$hash "
                                "(made by `optout-sidecar hash-password`)")
    try:
        n, r, p = (int(v) for v in parts[1:4])
    except ValueError:
        raise PasswordHashError("N, r and p must be integers") from None
    _check_params(n, r, p)
    try:
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        raise PasswordHashError("salt and hash must be base64") from None
    if len(salt) < 8:
        raise PasswordHashError("salt must be at least 8 bytes")
    if not 16 <= len(digest) <= 64:
        raise PasswordHashError("hash must be 16 to 64 bytes")
    return ScryptHash(n, r, p, salt, digest)


def _check_params(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1) or n > _MAX_N:
        raise PasswordHashError(f"N must be a power of 2 up to {_MAX_N}")
    if not 1 <= r <= _MAX_R:
        raise PasswordHashError(f"r must be between 1 and {_MAX_R}")
    if not 1 <= p <= _MAX_P:
        raise PasswordHashError(f"p must be between 1 and {_MAX_P}")
    if 128 * n * r * p > _MAX_MEMORY:
        raise PasswordHashError("N * r * p asks for more than 1 GiB")


def verify_password(password: bytes, stored: ScryptHash) -> bool:
    """True if `password` hashes to `stored` (compared in constant time).
    CPU-bound for tens of milliseconds: call it from a worker thread."""
    derived = _derive(password, stored.n, stored.r, stored.p, stored.salt, len(stored.digest))
    return hmac.compare_digest(derived, stored.digest)


def check_plain(password: bytes, configured: str) -> bool:
    """True if `password` equals the plain-text `configured` one, in constant time."""
    return hmac.compare_digest(password, configured.encode())
