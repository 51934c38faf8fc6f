"""Passwords and API tokens. Pure functions: no I/O, no clock of their own."""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet: argon2id, 19 MiB, 2 iterations, 1 lane.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when a username does not exist, so the answer takes as long as for a real one.
_DUMMY_HASH = _HASHER.hash("boreas-timing-equaliser")

TOKEN_PREFIX = "bor_"
_TOKEN_SHAPE = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}$")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A bearer token: a recognisable prefix (for secret scanners) and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_is_well_formed(token: str) -> bool:
    return bool(_TOKEN_SHAPE.match(token))


def token_digest(token: str) -> bytes:
    # 256 random bits need no slow hash: SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).digest()
