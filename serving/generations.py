"""Generation tokens: how every gateway process learns, at its next request, that something it
keeps in memory changed elsewhere.

A token is a random string in Redis under a name of its own, replaced (once the change is
committed) by whatever changes what the gateway keeps: an application key or a project
(:data:`KEYS`, ``serving.admission``), or anything a model name's serving plan reads
(:data:`PLANS`, ``serving.plans``). A process keeps an item with the token it read *before*
the rows, and uses it only while the token it sees is the same one. The gateway sees both
tokens in the Redis round trip that admits each request (``serving.admission``), so keeping
costs nothing more per request, and a change is seen at the next request in every process.

Without Redis (the embedded default's file cache) there are no tokens: each keeper then falls
back to what it did before (no kept keys; plans kept for FTPORTAL_GATEWAY_NAME_TTL_SECONDS).
"""

from __future__ import annotations

import logging
import secrets

import redis
from django.conf import settings
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

KEYS = "serving:keys:generation"
PLANS = "serving:plans:generation"


def redis_url() -> str | None:
    """Where the tokens live: the default cache's Redis, or None for another cache."""
    config = settings.CACHES["default"]
    if not config["BACKEND"].endswith("RedisCache"):
        return None
    return str(config["LOCATION"])


def cache_key(name: str) -> str:
    """``name`` as Django's cache names it in Redis (its prefix and version), so that the
    tokens and ``serving.services``' counters sit under the same prefix (a test run's own)."""
    config = settings.CACHES["default"]
    return f"{config.get('KEY_PREFIX', '')}:{config.get('VERSION', 1)}:{name}"


_sync_clients: dict[str, redis.Redis] = {}


def redis_client(url: str) -> redis.Redis:
    """This process's client of the Redis at ``url`` (one connection pool per URL)."""
    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = redis.Redis.from_url(url)
    return client


def generation_text(value: object) -> str:
    """A token as Redis answered it (bytes, or nothing when never set), as text."""
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def generations_read(url: str, *names: str) -> tuple[str, ...]:
    """The tokens of ``names`` now ("" for one never set), in one round trip. Raises what
    redis-py raises when Redis cannot be asked."""
    values = redis_client(url).mget([cache_key(name) for name in names])
    return tuple(generation_text(value) for value in values)


def generation_replace(name: str, *, what: str) -> None:
    """Replace the token of ``name``: every process reads again what it kept under it. Call
    it once the change is committed (a process that read between the replacement and the
    commit would keep the old rows under the new token). ``what`` names the change for the
    error logged when Redis cannot be told."""
    url = redis_url()
    if url is None:
        return
    try:
        redis_client(url).set(cache_key(name), secrets.token_hex(8))
    except (RedisError, OSError) as failure:
        # The other processes keep what they have until their own bound: said, not hidden.
        logger.error("%s changed but Redis could not say so: %s", what, failure)
