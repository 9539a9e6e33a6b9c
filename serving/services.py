"""Writes and checks for application keys: create (the secret shown once), revoke (at once),
authenticate a presented key for the gateway, and its per-minute rate limit. Writes of the
request log: sending logged requests to review, and retention."""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from datasets.models import Dataset, Example, OriginKind
from datasets.services import example_add_for_review
from ftportal.errors import ApplicationError, ConflictError
from ftportal.hashed_secrets import last_used_due, new_secret, secret_matches, secret_sha256
from ftportal.models import Project

from .models import KEY_NAME_MAX_LENGTH, MAX_RATE_LIMIT_PER_MINUTE, ApplicationKey, RequestLog
from .selectors import application_key_with_prefix, request_logs_in_project

logger = logging.getLogger(__name__)

# ``ftp_`` marks the product's application keys (a scanner or a person can tell one in a
# leaked file); 12 hex digits find the row; the secret is 43 URL-safe characters.
KEY_MARK = "ftp_"
KEY_PATTERN = re.compile(r"(ftp_[0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
RATE_WINDOW_SECONDS = 60


# --- create and revoke ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedApplicationKey:
    """A new key and its plaintext, which is answered once and stored nowhere."""

    key: ApplicationKey
    plaintext: str


def _key_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise ApplicationError("name: give the key a name.", extra={"field": "name"})
    if len(cleaned) > KEY_NAME_MAX_LENGTH:
        raise ApplicationError(
            f"name: at most {KEY_NAME_MAX_LENGTH} characters.", extra={"field": "name"}
        )
    return cleaned


def _rate_limit(rate_limit_per_minute: int | None) -> int:
    if rate_limit_per_minute is None:
        return int(settings.FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE)
    if not 1 <= rate_limit_per_minute <= MAX_RATE_LIMIT_PER_MINUTE:
        raise ApplicationError(
            f"rate_limit_per_minute: a whole number from 1 to {MAX_RATE_LIMIT_PER_MINUTE}.",
            extra={"field": "rate_limit_per_minute"},
        )
    return rate_limit_per_minute


def application_key_create(
    *,
    project: Project,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
) -> CreatedApplicationKey:
    """A new key of ``project``: its row (the secret only as its SHA-256) and its plaintext.

    ``rate_limit_per_minute`` left out takes FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE. A live key
    of the project with the same name is a 409 (a double submit creates one key, not two).
    """
    cleaned = _key_name(name)
    limit = _rate_limit(rate_limit_per_minute)
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(
            "expires_at: must be in the future (leave it out for a key that does not expire).",
            extra={"field": "expires_at"},
        )
    prefix = f"{KEY_MARK}{secrets.token_hex(6)}"
    secret = new_secret()
    conflict = ConflictError(
        f"name: the project already has a live key named '{cleaned}'; "
        "choose another name or revoke that key first.",
        extra={"field": "name"},
    )
    if ApplicationKey.objects.filter(project=project, name=cleaned, revoked_at=None).exists():
        raise conflict
    try:
        # Its own savepoint: two concurrent creates with one name meet the unique constraint,
        # and the loser's error must not break the caller's transaction.
        with transaction.atomic():
            key = ApplicationKey.objects.create(
                project=project,
                name=cleaned,
                prefix=prefix,
                secret_sha256=secret_sha256(secret),
                rate_limit_per_minute=limit,
                expires_at=expires_at,
                created_by=user,
            )
    except IntegrityError:
        raise conflict from None
    return CreatedApplicationKey(key=key, plaintext=f"{prefix}.{secret}")


def application_key_revoke(*, key: ApplicationKey, user: User) -> ApplicationKey:
    """Ends a key now: the next request with it is refused (every request reads the row).
    Revoking a revoked key keeps its first revocation."""
    ApplicationKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=user
    )
    key.refresh_from_db(fields=["revoked_at", "revoked_by"])
    return key


# --- the gateway's check ----------------------------------------------------------------------


class KeyRefusal(StrEnum):
    """Why a presented key serves nothing."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    OTHER_PROJECT = "other_project"


class ApplicationKeyRefused(ApplicationError):
    """A request whose key serves nothing: 401 for no valid key (missing, malformed, unknown,
    revoked, expired), 403 for a valid key of another project. ``reason`` says which; the
    message is safe to answer (it never tells whether a prefix exists)."""

    def __init__(self, reason: KeyRefusal, message: str) -> None:
        super().__init__(message, extra={"reason": reason.value})
        self.reason = reason
        self.status_code = 403 if reason is KeyRefusal.OTHER_PROJECT else 401


def key_from_authorization(header: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header (what the openai client sends);
    None when there is no such header. Anything else is handed on as it is, to be refused as
    malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else header


def application_key_authenticate(
    raw_key: str | None, *, project: Project | None = None
) -> ApplicationKey:
    """The live key ``raw_key`` is, for ``project`` when given; else ApplicationKeyRefused.

    The gateway calls this before it resolves or serves anything, so a refused request is
    neither served nor logged as the project's traffic. Every call reads the row, so a
    revocation or an expiry takes effect at the next request; ``last_used_at`` is written at
    most once a minute per key (``ftportal.hashed_secrets.last_used_due``).
    """
    if not raw_key:
        raise ApplicationKeyRefused(
            KeyRefusal.MISSING,
            "No application key: send it as 'Authorization: Bearer <key>'.",
        )
    matched = KEY_PATTERN.fullmatch(raw_key)
    if matched is None:
        raise ApplicationKeyRefused(
            KeyRefusal.MALFORMED,
            "This is not an application key: it reads 'ftp_<12 hex digits>.<secret>'.",
        )
    prefix, secret = matched.groups()
    key = application_key_with_prefix(prefix)
    # Compared even for an unknown prefix (secret_matches says why).
    valid = secret_matches(key.secret_sha256 if key else None, secret)
    if key is None or not valid:
        raise ApplicationKeyRefused(KeyRefusal.UNKNOWN, "Unknown application key.")
    now = timezone.now()
    if key.revoked_at is not None:
        raise ApplicationKeyRefused(
            KeyRefusal.REVOKED,
            f"The application key {key.prefix} was revoked; ask a lead of the project for a "
            "new one.",
        )
    if key.expires_at is not None and key.expires_at <= now:
        raise ApplicationKeyRefused(
            KeyRefusal.EXPIRED,
            f"The application key {key.prefix} expired at {key.expires_at:%Y-%m-%d %H:%M} UTC; "
            "ask a lead of the project for a new one.",
        )
    if project is not None and key.project_id != project.pk:
        raise ApplicationKeyRefused(
            KeyRefusal.OTHER_PROJECT,
            f"The application key {key.prefix} belongs to another project.",
        )
    if last_used_due(key.last_used_at, now):
        ApplicationKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- rate limit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    """Whether one more request of a key fits its per-minute limit.

    ``retry_after_seconds`` (whole seconds, at least 1) is for the 429's Retry-After when it
    does not; ``remaining`` is what the current window still allows. ``counted`` is False when
    the counter could not be reached and the request was let through (see
    :func:`application_key_rate_check`).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after_seconds: int
    counted: bool = True

    def headers(self) -> dict[str, str]:
        """The answer's rate-limit headers, named as OpenAI's API names them, so clients that
        read those read these; a refusal adds Retry-After, for its 429."""
        headers = {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
            headers["x-ratelimit-reset-requests"] = f"{self.retry_after_seconds}s"
        return headers


# The counters' cache, one per process: ``django.core.cache.cache`` is one per async context
# (an asgiref Local), so under ASGI every gateway request got a cache of its own, with a Redis
# connection pool of its own and a new connection (bench/gateway.py: a ~20x throughput cut).
# Kept with the settings it was made from, so a changed CACHES (override_settings) makes anew.
_counter_cache: tuple[object, BaseCache] | None = None


def _counters() -> BaseCache:
    global _counter_cache
    config = settings.CACHES["default"]
    kept = _counter_cache
    if kept is None or kept[0] is not config:
        # Two threads racing here make two; one is kept, the other's pool goes with it.
        kept = _counter_cache = (config, caches.create_connection("default"))
    return kept[1]


def _window_count(counter: str, *, ttl_seconds: int) -> int:
    """Adds one to a window's counter and answers its new value.

    In Redis (Django's RedisCache, the cache the project already uses) INCR is atomic, so
    concurrent requests on several web processes count exactly. The counter outlives its window
    a little and then expires by itself: nothing to clean up. (The embedded default's file
    cache counts too, but not atomically: close enough on one machine.)
    """
    cache = _counters()
    try:
        return int(cache.incr(counter))
    except ValueError:  # the window's first request: no counter yet
        if cache.add(counter, 1, timeout=ttl_seconds):
            return 1
        return int(cache.incr(counter))  # another request created it meanwhile


def application_key_rate_check(key: ApplicationKey, *, now: float | None = None) -> RateDecision:
    """Counts one request of ``key`` against its limit in a fixed one-minute window.

    Windows start on the minute (of the Unix clock); ``now`` is the request's time in epoch
    seconds, the clock's by default. A request over the limit is counted too, so a client that
    keeps hammering stays refused until the window ends; Retry-After is the time left in it.

    When the counter store is down, the request is allowed (fail open) and a warning logged:
    the key itself was already checked in Postgres, so only known, live applications pass,
    and the limit protects capacity, not secrecy. Failing closed would turn a Redis outage
    into an outage of every application's production traffic.
    """
    moment = time.time() if now is None else now
    window = math.floor(moment / RATE_WINDOW_SECONDS)
    window_end = (window + 1) * RATE_WINDOW_SECONDS
    left_in_window = max(1, math.ceil(window_end - moment))
    limit = key.rate_limit_per_minute
    counter = f"serving:rate:{key.pk}:{window}"
    try:
        count = _window_count(counter, ttl_seconds=left_in_window + RATE_WINDOW_SECONDS)
    except (RedisError, OSError) as failure:
        logger.warning("rate limit not checked for application key %s: %s", key.prefix, failure)
        return RateDecision(
            allowed=True, limit=limit, remaining=limit, retry_after_seconds=0, counted=False
        )
    if count > limit:
        return RateDecision(
            allowed=False, limit=limit, remaining=0, retry_after_seconds=left_in_window
        )
    return RateDecision(allowed=True, limit=limit, remaining=limit - count, retry_after_seconds=0)


# --- the request log ----------------------------------------------------------------------------

RETENTION_DELETE_CHUNK_ROWS = 5000


def _text_content(content: object) -> str:
    # OpenAI messages may carry a list of parts; an example holds text.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _review_messages(row: RequestLog, answer: str) -> list[dict[str, str]]:
    prompt = [
        {"role": str(message.get("role", "user")), "content": _text_content(message.get("content"))}
        for message in row.messages
        if isinstance(message, dict)
    ]
    return [*prompt, {"role": "assistant", "content": answer}]


def request_logs_send_to_review(
    *,
    project: Project,
    request_ids: Sequence[str],
    dataset: Dataset,
    user: User,
    corrections: Mapping[str, str] | None = None,
) -> list[Example]:
    """Each chosen request becomes a new pending example in ``dataset``: its messages with the
    reviewer's correction as the proposed answer (the model's output where none is given),
    and the request id as provenance in its metadata. A request already sent is not sent
    again. Requests and dataset must both be ``project``'s."""
    if dataset.project_id != project.pk:
        raise ApplicationError(
            f"dataset: no dataset {dataset.pk} in {project.name}.", extra={"field": "dataset"}
        )
    wanted = sorted(set(request_ids))
    if not wanted:
        raise ApplicationError(
            "requests: choose at least one request.", extra={"field": "requests"}
        )
    corrections = corrections or {}
    created: list[Example] = []
    with transaction.atomic():
        # Locked, so two reviewers sending the same request at once create one example.
        rows = list(
            request_logs_in_project(project, wanted)
            .select_for_update(of=("self",))
            .select_related("served_version__registered_model")
            .order_by("created_at", "id")
        )
        missing = sorted(set(wanted) - {row.request_id for row in rows})
        if missing:
            raise ApplicationError(
                f"requests: no requests {', '.join(missing)} in {project.name}.",
                extra={"field": "requests"},
            )
        for row in rows:
            if row.sent_to_review_id is not None:
                continue
            correction = corrections.get(row.request_id, "").strip()
            version = row.served_version
            example = example_add_for_review(
                dataset=dataset,
                messages=_review_messages(row, correction or row.output),
                origin_kind=OriginKind.PRODUCTION_FEEDBACK,
                metadata={
                    "source": "production",
                    "request_id": row.request_id,
                    "requested_model": row.requested_model,
                    "served_version": str(version) if version is not None else "",
                    "model_output": row.output,
                    "corrected": bool(correction),
                    "sent_by": user.get_username(),
                },
            )
            RequestLog.objects.filter(pk=row.pk).update(sent_to_review=example)
            created.append(example)
    return created


def request_logs_delete_expired(*, now: datetime | None = None) -> int:
    """Delete rows older than FTPORTAL_REQUEST_LOG_RETENTION_DAYS (0: keep all), a chunk per
    transaction so the table is never locked long and a stopped run resumes. Returns how
    many were deleted."""
    days = int(settings.FTPORTAL_REQUEST_LOG_RETENTION_DAYS)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        chunk = list(
            RequestLog.objects.filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("pk", flat=True)[:RETENTION_DELETE_CHUNK_ROWS]
        )
        if not chunk:
            return deleted
        count, _ = RequestLog.objects.filter(pk__in=chunk).delete()
        deleted += count
