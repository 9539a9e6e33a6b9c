"""Secrets stored hashed: the one way the product keeps a key it hands out (API tokens for
users, application keys for the gateway).

A key reads ``<prefix>.<secret>``. The prefix is stored as is and finds the row; the secret is
stored only as its SHA-256 (a long random secret needs no slow hash), so a copy of the database
holds no usable key. The plaintext leaves the server once, in the answer that creates it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

# last_used_at is written at most this often per key: a client making many calls a second
# should not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)

# Bytes of randomness in a secret: 32 bytes, 43 URL-safe characters.
SECRET_BYTES = 32


def secret_sha256(secret: str) -> str:
    """What is stored of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_matches(stored_sha256: str | None, secret: str) -> bool:
    """Whether ``secret`` is the one stored; ``stored_sha256`` None when no row had the prefix.

    The digests are compared in constant time, and an unknown prefix is compared against a
    random digest too, so timing tells neither which prefixes exist nor how much matched.
    """
    expected = stored_sha256 if stored_sha256 is not None else secret_sha256(secrets.token_hex(16))
    matched = hmac.compare_digest(expected, secret_sha256(secret))
    return matched and stored_sha256 is not None and bool(secret)


def last_used_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a key's last_used_at is stale enough to write again (``LAST_USED_RESOLUTION``)."""
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION
