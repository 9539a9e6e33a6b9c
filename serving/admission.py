"""Admitting a gateway request: its application key and its rate limit, on the event loop and
without a database read for a key that was checked a moment ago.

:func:`admission_read` is the whole check, in a thread: the key's row in Postgres
(``serving.services.application_key_authenticate``) and its count in Redis. A key it admits is
kept in this process for at most KEPT_KEY_SECONDS, found by the SHA-256 of the whole presented
key (the key itself is never kept). :func:`admission_kept` then admits that key's next requests
in one Redis round trip, which counts the request against the key's limit only if the keys'
generation is still the one read before the row was: a token that every change to a key or a
project replaces, once committed (:func:`keys_changed`, from ``serving.apps`` and the revoke
service; ``serving.generations``). So a revocation, an edited limit or a renamed project is
seen at the next request in every gateway process, not after a cache's lifetime. Expiry is
compared with the clock. The same round trip answers the plans' generation, under which the
gateway keeps what model names serve (``serving.plans``), and whether the key's project is
refused (``serving.refusals``: its budget's hard cap reached); :func:`admission_read` asks
``ftportal.spending.spending_refusal`` for the latter, from the rows.

Without Redis (the embedded default's file cache) or while it is unreachable nothing is kept
and every request takes :func:`admission_read`, whose rate check fails open as before.

The gateway's overhead is mostly CPU time per request (bench/gateway.py): the row read and the
thread hop were a fifth of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio
from django.db import close_old_connections
from django.utils import timezone
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ftportal.hashed_secrets import last_used_due
from ftportal.spending import spending_refusal

from .generations import (
    KEYS,
    PLANS,
    cache_key,
    generation_replace,
    generation_text,
    generations_read,
    redis_url,
)
from .models import ApplicationKey
from .refusals import refusal_name
from .services import (
    RateDecision,
    application_key_authenticate,
    application_key_rate_check,
    application_key_used,
    key_from_authorization,
    rate_decision,
    rate_window,
)

logger = logging.getLogger(__name__)

# A kept key is read again after this long even when no change was announced: the bound on
# a change Redis lost (a restart that dropped the generation between two reads).
KEPT_KEY_SECONDS = 60.0
# Past this many kept keys (a client cycling through made-up keys cannot get here: only keys
# that passed are kept), all are forgotten at once.
MAX_KEPT_KEYS = 10_000
# How long the gateway waits for Redis to admit a kept key before asking Postgres instead.
REDIS_TIMEOUT_SECONDS = 1.0

# Counts the request only when the keys' generation is the expected one, atomically: a key
# that changed is read again before it is counted, so no request is counted twice. Answers
# the plans' generation too, in the same round trip (serving.plans keeps plans under it), and
# the project's refusal ('' for none: serving.refusals). A refused request is still counted:
# the limit holds for every path of the key (feedback and events are not refused).
_COUNT_IF_UNCHANGED = """
local generation = redis.call('GET', KEYS[1]) or ''
local plans = redis.call('GET', KEYS[3]) or ''
local refused = redis.call('GET', KEYS[4]) or ''
if generation ~= ARGV[1] then return {-1, generation, plans, refused} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return {count, generation, plans, refused}
"""


@dataclass(frozen=True)
class Admission:
    """A request's key (with its project) and its rate decision, the plans' generation
    token seen while admitting it (``serving.generations``; None without Redis), and why the
    project's chat requests are refused (its budget's hard cap; None: they are served)."""

    key: ApplicationKey
    rate: RateDecision
    plans_generation: str | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class _KeptKey:
    key: ApplicationKey
    generation: str
    kept_until: float  # time.monotonic()


_kept: dict[str, _KeptKey] = {}
_kept_lock = threading.Lock()


def _digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def keys_changed() -> None:
    """Announce that a key or a project changed: every process reads its kept keys again.
    Call it once the change is committed (``serving.generations``)."""
    with _kept_lock:
        _kept.clear()
    generation_replace(KEYS, what="application keys")


# --- admitting ------------------------------------------------------------------------------


def admission_read(authorization: str | None) -> Admission:
    """The request's key as its row says now and its rate decision, in a thread (database
    reads); ApplicationKeyRefused for a key that serves nothing. An admitted key is kept for
    :func:`admission_kept`."""
    raw_key = key_from_authorization(authorization)
    url = redis_url()
    generation: str | None = None
    plans_generation: str | None = None
    if url is not None and raw_key:
        # Before the rows (serving.generations). Unreadable: nothing kept, and the rate check
        # below says what failed.
        with contextlib.suppress(RedisError, OSError):
            generation, plans_generation = generations_read(url, KEYS, PLANS)
    key = application_key_authenticate(raw_key)
    rate = application_key_rate_check(key)
    # From the rows, as the key was (the budget's hook); a kept key then reads the copy in
    # Redis with its count, which the hook keeps in step.
    refusal = spending_refusal(key.project_id)
    if generation is not None and raw_key and rate.counted:
        with _kept_lock:
            if len(_kept) >= MAX_KEPT_KEYS:
                _kept.clear()
            _kept[_digest(raw_key)] = _KeptKey(
                key=key, generation=generation, kept_until=time.monotonic() + KEPT_KEY_SECONDS
            )
    return Admission(key=key, rate=rate, plans_generation=plans_generation, refusal=refusal)


async def admission_kept(authorization: str | None) -> Admission | None:
    """The admission of a kept key, counted in one Redis round trip on the event loop; None
    when the key is not kept (or no longer valid as kept, or Redis cannot be asked): then
    :func:`admission_read` decides, and nothing was counted here."""
    raw_key = key_from_authorization(authorization)
    url = redis_url()
    if not raw_key or url is None:
        return None
    digest = _digest(raw_key)
    kept = _kept.get(digest)
    now = timezone.now()
    if (
        kept is None
        or kept.kept_until <= time.monotonic()
        or (kept.key.expires_at is not None and kept.key.expires_at <= now)
    ):
        return None
    key = kept.key
    moment = time.time()
    window = rate_window(moment)
    try:
        count, plans_generation, refusal = await _count_if_unchanged(
            url,
            counter=cache_key(window.counter(key.pk)),
            refused=refusal_name(key.project_id),
            expected=kept.generation,
            ttl_seconds=window.ttl_seconds,
        )
    except (RedisError, OSError, TimeoutError):
        return None
    if count < 0:  # changed since it was kept: read it again
        with _kept_lock:
            _kept.pop(digest, None)
        return None
    if last_used_due(key.last_used_at, now):
        key.last_used_at = now  # one write a minute, not one per request while it runs
        _touch_in_background(key.pk, now)
    return Admission(
        key=key,
        rate=rate_decision(key, count=count, window=window),
        plans_generation=plans_generation,
        refusal=refusal,
    )


_async_clients: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, AsyncScript]] = {}


def _count_script(url: str) -> AsyncScript:
    """This event loop's client's script (an asyncio connection belongs to the loop that
    opened it); sent by its SHA (EVALSHA) after the first time."""
    loop = asyncio.get_running_loop()
    kept = _async_clients.get((id(loop), url))
    if kept is None or kept[0] is not loop:
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        kept = _async_clients[(id(loop), url)] = (
            loop,
            client.register_script(_COUNT_IF_UNCHANGED),
        )
    return kept[1]


async def _count_if_unchanged(
    url: str, *, counter: str, refused: str, expected: str, ttl_seconds: int
) -> tuple[int, str, str | None]:
    """(the key's count this window, or -1 when the keys' generation is no longer
    ``expected``; the plans' generation; the project's refusal under ``refused``, or None)."""
    # Bounded here, once, rather than by the client's socket timeout: redis-py wraps every
    # write in asyncio.wait_for when it has one, a task a command (a seventh of the gateway's
    # CPU time in bench/gateway.py). A Redis that does not answer in time admits nothing
    # here; the request is then admitted from Postgres, its count failing open.
    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
        count, _, plans_generation, refusal = await _count_script(url)(
            keys=[cache_key(KEYS), counter, cache_key(PLANS), refused],
            args=[expected, ttl_seconds],
        )
    return int(count), generation_text(plans_generation), generation_text(refusal) or None


def _touch_in_background(key_id: int, now: datetime) -> None:
    def touch() -> None:
        try:
            application_key_used(key_id=key_id, now=now)
        finally:
            close_old_connections()  # the thread is no request's

    asyncio.get_running_loop().run_in_executor(None, touch)
