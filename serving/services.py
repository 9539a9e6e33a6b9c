"""Writes and checks for application keys: create (the secret shown once), revoke (at once),
authenticate a presented key for the gateway, and its per-minute rate limit. Writes of the
request log: sending logged requests to review, and retention. Aliases' fallback routes:
create, change, remove."""

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

from catalog.models import BaseModel
from datasets.models import Dataset, Example, OriginKind
from datasets.services import example_add_for_review
from ftportal.errors import ApplicationError, ConflictError
from ftportal.hashed_secrets import last_used_due, new_secret, secret_matches, secret_sha256
from ftportal.models import Project
from ftportal.state import check_transition, state_set
from registry.models import Alias, ModelVersion, RegisteredModel
from registry.selectors import production_version
from registry.services import model_version_promote

from .backends import vllm_endpoint_serving
from .models import (
    ARM_NAME_MAX_LENGTH,
    EXPERIMENT_NAME_MAX_LENGTH,
    EXPERIMENT_TRANSITIONS,
    KEY_NAME_MAX_LENGTH,
    MAX_ARM_WEIGHT,
    MAX_ARMS,
    MAX_COOLDOWN_SECONDS,
    MAX_FAILURES_TO_OPEN,
    MAX_RATE_LIMIT_PER_MINUTE,
    MAX_TIMEOUT_SECONDS,
    MIN_ROUTE_SECONDS,
    OUTCOME_NAME_MAX_LENGTH,
    ApplicationKey,
    Experiment,
    ExperimentArm,
    ExperimentStatus,
    FallbackRoute,
    Feedback,
    OutcomeEvent,
    RequestLog,
)
from .request_log import request_log_feedback_lock
from .selectors import (
    application_key_with_prefix,
    experiment_arm_results,
    experiment_verdict,
    request_logs_in_project,
)

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
    """Ends a key now: the next request with it is refused in every gateway process (saved,
    so the commit announces it to the keys they keep: ``serving.apps``,
    ``serving.admission``). Revoking a revoked key keeps its first revocation."""
    with transaction.atomic():
        locked = ApplicationKey.objects.select_for_update().get(pk=key.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.revoked_by = user
            locked.save(update_fields=["revoked_at", "revoked_by"])
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
        application_key_used(key_id=key.pk, now=now)
        key.last_used_at = now
    return key


def application_key_used(*, key_id: int, now: datetime) -> None:
    """Records that a key was used at ``now`` (its ``last_used_at``; callers write it at most
    once a minute, ``ftportal.hashed_secrets.last_used_due``)."""
    ApplicationKey.objects.filter(pk=key_id).update(last_used_at=now)


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


@dataclass(frozen=True)
class RateWindow:
    """The one-minute window a moment falls in: windows start on the minute of the Unix clock.
    ``seconds_left`` (whole, at least 1) is the Retry-After of a refusal in it; a window's
    counter lives ``ttl_seconds``, a little past its end, and then expires by itself."""

    number: int
    seconds_left: int

    def counter(self, key_id: int) -> str:
        """The name of a key's counter for this window (in the default cache)."""
        return f"serving:rate:{key_id}:{self.number}"

    @property
    def ttl_seconds(self) -> int:
        return self.seconds_left + RATE_WINDOW_SECONDS


def rate_window(moment: float) -> RateWindow:
    """The window of ``moment`` (epoch seconds)."""
    window = math.floor(moment / RATE_WINDOW_SECONDS)
    window_end = (window + 1) * RATE_WINDOW_SECONDS
    return RateWindow(number=window, seconds_left=max(1, math.ceil(window_end - moment)))


def rate_decision(key: ApplicationKey, *, count: int, window: RateWindow) -> RateDecision:
    """The decision for the ``count``-th request of ``key`` in ``window``."""
    limit = key.rate_limit_per_minute
    if count > limit:
        return RateDecision(
            allowed=False, limit=limit, remaining=0, retry_after_seconds=window.seconds_left
        )
    return RateDecision(allowed=True, limit=limit, remaining=limit - count, retry_after_seconds=0)


def application_key_rate_check(key: ApplicationKey, *, now: float | None = None) -> RateDecision:
    """Counts one request of ``key`` against its limit in a fixed one-minute window
    (:func:`rate_window`; ``now`` is the request's time in epoch seconds, the clock's by
    default). A request over the limit is counted too, so a client that keeps hammering stays
    refused until the window ends; Retry-After is the time left in it.

    When the counter store is down, the request is allowed (fail open) and a warning logged:
    the key itself was already checked in Postgres, so only known, live applications pass,
    and the limit protects capacity, not secrecy. Failing closed would turn a Redis outage
    into an outage of every application's production traffic.
    """
    window = rate_window(time.time() if now is None else now)
    try:
        count = _window_count(window.counter(key.pk), ttl_seconds=window.ttl_seconds)
    except (RedisError, OSError) as failure:
        logger.warning("rate limit not checked for application key %s: %s", key.prefix, failure)
        limit = key.rate_limit_per_minute
        return RateDecision(
            allowed=True, limit=limit, remaining=limit, retry_after_seconds=0, counted=False
        )
    return rate_decision(key, count=count, window=window)


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
    """Each chosen request becomes a new pending example in ``dataset``: its messages with a
    proposed answer, and the request id as provenance in its metadata. The proposed answer is
    the reviewer's correction, else the correction the application posted as feedback
    (``POST /v1/feedback``), else the model's output. A request already sent is not sent
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
        feedback = {
            given.request_id: given
            for given in Feedback.objects.filter(
                project=project, request_id__in=[row.request_id for row in rows]
            )
        }
        for row in rows:
            if row.sent_to_review_id is not None:
                continue
            given = feedback.get(row.request_id)
            reviewer_correction = corrections.get(row.request_id, "").strip()
            feedback_correction = given.correction.strip() if given is not None else ""
            correction = reviewer_correction or feedback_correction
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
                    # Who proposed the answer: "reviewer", "feedback" (the application's
                    # correction) or "" (the model's own output).
                    "correction_by": (
                        "reviewer"
                        if reviewer_correction
                        else "feedback"
                        if feedback_correction
                        else ""
                    ),
                    "feedback_score": given.score if given is not None else None,
                    "feedback_comment": given.comment if given is not None else "",
                    "sent_by": user.get_username(),
                },
            )
            RequestLog.objects.filter(pk=row.pk).update(sent_to_review=example)
            created.append(example)
    return created


# --- outcomes: feedback and events posted against a request id ---------------------------------


def feedback_record(
    *,
    key: ApplicationKey,
    request_id: str,
    score: float,
    comment: str = "",
    correction: str = "",
    caller_user: str = "",
) -> tuple[Feedback, bool]:
    """The key's project's feedback on ``request_id``, replacing any given before (one per
    request); True when it is the first. The caller has checked that the request is the
    project's (``serving.outcomes``). The request's log row gets the score and whether there
    is a correction in the same transaction (the browser's feedback filter reads them there)."""
    with transaction.atomic():
        stored, created = Feedback.objects.update_or_create(
            project_id=key.project_id,
            request_id=request_id,
            defaults={
                "application_key": key,
                "score": score,
                "comment": comment,
                "correction": correction,
                "caller_user": caller_user,
            },
        )
        _feedback_onto_log_row(stored)
    return stored, created


def _feedback_onto_log_row(feedback: Feedback) -> None:
    """Copy ``feedback`` onto its request's log row. The row may not be stored yet (the log
    is written in batches): then wait for the batches being written and look once more; a
    batch written later copies the feedback itself (``request_log_feedback_lock``)."""
    row = RequestLog.objects.filter(project_id=feedback.project_id, request_id=feedback.request_id)
    copied = {"feedback_score": feedback.score, "feedback_corrected": feedback.correction != ""}
    if row.update(**copied) == 0:
        request_log_feedback_lock(shared=False)
        row.update(**copied)


def outcome_event_record(
    *, key: ApplicationKey, request_id: str, name: str, value: float = 1.0
) -> OutcomeEvent:
    """One more business event of the key's project on ``request_id`` (checked as for
    :func:`feedback_record`)."""
    return OutcomeEvent.objects.create(
        project_id=key.project_id,
        request_id=request_id,
        name=name,
        value=value,
        application_key=key,
    )


def request_logs_delete_expired(*, now: datetime | None = None) -> int:
    """Delete rows older than FTPORTAL_REQUEST_LOG_RETENTION_DAYS (0: keep all), a chunk per
    transaction so the table is never locked long and a stopped run resumes. Returns how
    many were deleted."""
    days = int(settings.FTPORTAL_REQUEST_LOG_RETENTION_DAYS)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    # Project by project, oldest first: each chunk is read along the project's index in the
    # log's order (there is no index on created_at alone; see RequestLog.Meta).
    for project_id in Project.objects.order_by("pk").values_list("pk", flat=True):
        while True:
            chunk = list(
                RequestLog.objects.filter(project_id=project_id, created_at__lt=cutoff)
                .order_by("created_at", "id")
                .values_list("pk", flat=True)[:RETENTION_DELETE_CHUNK_ROWS]
            )
            if not chunk:
                break
            count, _ = RequestLog.objects.filter(pk__in=chunk).delete()
            deleted += count
    return deleted


# --- experiments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One arm as a lead asks for it: a version of the experiment's model, or a catalog base
    model (by key) as it is; the shadow arm's weight is not used."""

    name: str
    weight: int = 1
    model_version_id: int | None = None
    base_model_key: str = ""
    shadow: bool = False


def _arm_field(position: int, name: str) -> str:
    return f"arms[{position}].{name}"


def _text(value: str, *, field: str, max_length: int, what: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise ApplicationError(f"{field}: give {what}.", extra={"field": field})
    if len(cleaned) > max_length:
        raise ApplicationError(f"{field}: at most {max_length} characters.", extra={"field": field})
    return cleaned


def _arm_rows(registered_model: RegisteredModel, arms: Sequence[ArmSpec]) -> list[ExperimentArm]:
    """Unsaved arm rows for ``arms``, each checked (the field named in every refusal)."""
    if len([arm for arm in arms if not arm.shadow]) < 2:
        raise ApplicationError(
            "arms: an experiment needs at least two answering arms (plus an optional shadow).",
            extra={"field": "arms"},
        )
    if len(arms) > MAX_ARMS:
        raise ApplicationError(f"arms: at most {MAX_ARMS} arms.", extra={"field": "arms"})
    if len([arm for arm in arms if arm.shadow]) > 1:
        raise ApplicationError("arms: at most one shadow arm.", extra={"field": "arms"})
    rows: list[ExperimentArm] = []
    names: set[str] = set()
    for position, arm in enumerate(arms):
        name = _text(
            arm.name,
            field=_arm_field(position, "name"),
            max_length=ARM_NAME_MAX_LENGTH,
            what="the arm a name",
        )
        if name in names:
            raise ApplicationError(
                f"{_arm_field(position, 'name')}: two arms are named '{name}'.",
                extra={"field": _arm_field(position, "name")},
            )
        names.add(name)
        if (arm.model_version_id is None) == (not arm.base_model_key):
            field = _arm_field(position, "model_version_id")
            raise ApplicationError(
                f"{field}: an arm serves either a version of {registered_model.name} "
                "(model_version_id) or a catalog base model as it is (base_model_key), "
                "not both or neither.",
                extra={"field": field},
            )
        version = base_model = None
        if arm.model_version_id is not None:
            version = ModelVersion.objects.filter(
                registered_model=registered_model, pk=arm.model_version_id
            ).first()
            if version is None:
                field = _arm_field(position, "model_version_id")
                raise ApplicationError(
                    f"{field}: {registered_model.name} has no version with id "
                    f"{arm.model_version_id}.",
                    extra={"field": field},
                )
        else:
            base_model = BaseModel.objects.filter(key=arm.base_model_key).first()
            if base_model is None:
                field = _arm_field(position, "base_model_key")
                raise ApplicationError(
                    f"{field}: the catalog has no base model '{arm.base_model_key}'.",
                    extra={"field": field},
                )
        weight = 0 if arm.shadow else arm.weight
        if not arm.shadow and not 1 <= weight <= MAX_ARM_WEIGHT:
            field = _arm_field(position, "weight")
            raise ApplicationError(
                f"{field}: a whole number from 1 to {MAX_ARM_WEIGHT}.", extra={"field": field}
            )
        rows.append(
            ExperimentArm(
                name=name,
                position=position,
                model_version=version,
                base_model=base_model,
                weight=weight,
                is_shadow=arm.shadow,
            )
        )
    return rows


def experiment_create(
    *,
    project: Project,
    user: User,
    name: str,
    registered_model: RegisteredModel,
    alias: str,
    success_event: str,
    arms: Sequence[ArmSpec],
    shadow_share: float = 0.0,
) -> Experiment:
    """A draft experiment on ``alias`` of ``registered_model`` (a model of ``project``) with
    its arms; nothing is served differently until it starts."""
    if registered_model.project_id != project.pk:
        raise ApplicationError(
            "registered_model_id: not a model of this project.",
            extra={"field": "registered_model_id"},
        )
    cleaned = _text(
        name, field="name", max_length=EXPERIMENT_NAME_MAX_LENGTH, what="the experiment a name"
    )
    alias_name = _text(alias, field="alias", max_length=100, what="the alias it splits")
    event = _text(
        success_event,
        field="success_event",
        max_length=OUTCOME_NAME_MAX_LENGTH,
        what="the success event's name (as the application posts it)",
    )
    if not 0.0 <= shadow_share <= 1.0:
        raise ApplicationError(
            "shadow_share: a share from 0 to 1.", extra={"field": "shadow_share"}
        )
    rows = _arm_rows(registered_model, arms)
    has_shadow = any(row.is_shadow for row in rows)
    if has_shadow and shadow_share == 0:
        raise ApplicationError(
            "shadow_share: give the share of requests mirrored to the shadow arm (above 0).",
            extra={"field": "shadow_share"},
        )
    if not has_shadow and shadow_share > 0:
        raise ApplicationError(
            "shadow_share: there is no shadow arm to mirror requests to.",
            extra={"field": "shadow_share"},
        )
    conflict = ConflictError(
        f"name: the project already has an experiment named '{cleaned}'.",
        extra={"field": "name"},
    )
    if Experiment.objects.filter(project=project, name=cleaned).exists():
        raise conflict
    try:
        with transaction.atomic():
            experiment = Experiment.objects.create(
                project=project,
                name=cleaned,
                registered_model=registered_model,
                alias=alias_name,
                success_event=event,
                shadow_share=shadow_share,
                created_by=user,
            )
            for row in rows:
                row.experiment = experiment
            ExperimentArm.objects.bulk_create(rows)
    except IntegrityError:
        raise conflict from None
    return experiment


def _locked_experiment(experiment: Experiment) -> Experiment:
    # Locked: a start, stop and conclude of one experiment at once must see each other's move.
    return Experiment.objects.select_for_update().get(pk=experiment.pk)


def _check_vllm_capacity(arms: Sequence[ExperimentArm]) -> None:
    """A vLLM server keeps at most max_loras adapters at once: an experiment whose version arms
    (the shadow included) need more on one server would thrash it, so it may not start."""
    needed: dict[int, set[int]] = {}
    servers = {}
    for arm in arms:
        if arm.model_version is None:
            continue
        endpoint = vllm_endpoint_serving(arm.model_version)
        if endpoint is None:
            continue
        servers[endpoint.pk] = endpoint
        needed.setdefault(endpoint.pk, set()).add(arm.model_version.pk)
    for endpoint_pk, versions in needed.items():
        endpoint = servers[endpoint_pk]
        if len(versions) > endpoint.max_loras:
            raise ApplicationError(
                f"arms: the version arms need {len(versions)} adapters loaded at once on the "
                f"vLLM endpoint '{endpoint.name}', which keeps at most {endpoint.max_loras} "
                "(its max_loras): remove an arm or raise the server's --max-loras and the "
                "endpoint's max_loras.",
                extra={"field": "arms"},
            )


def experiment_start(*, experiment: Experiment, user: User) -> Experiment:
    """Start splitting the alias's traffic between the arms; a 409 when another experiment
    runs on that alias or this one is not a draft."""
    with transaction.atomic():
        locked = _locked_experiment(experiment)
        if not Alias.objects.filter(
            registered_model_id=locked.registered_model_id, name=locked.alias
        ).exists():
            raise ConflictError(
                f"alias: {locked.registered_model.name} has no alias '{locked.alias}' yet, so "
                "no application calls it: point the alias at a version first.",
                extra={"field": "alias"},
            )
        arms = list(locked.arms.select_related("model_version__base_model"))
        _check_vllm_capacity(arms)
        changed = state_set(
            locked,
            kind="experiment",
            target=ExperimentStatus.RUNNING,
            allowed=EXPERIMENT_TRANSITIONS,
            changes={"started_at": timezone.now()},
        )
        running = Experiment.objects.filter(
            registered_model_id=locked.registered_model_id,
            alias=locked.alias,
            status=ExperimentStatus.RUNNING,
        ).first()
        if running is not None:
            raise ConflictError(
                f"The experiment '{running.name}' already runs on the alias '{locked.alias}': "
                "stop or conclude it first."
            )
        try:
            with transaction.atomic():
                locked.save(update_fields=changed)
        except IntegrityError:
            # Another start on the same alias committed between the check and this save.
            raise ConflictError(
                f"Another experiment already runs on the alias '{locked.alias}'."
            ) from None
    return locked


def experiment_stop(*, experiment: Experiment, user: User) -> Experiment:
    """End the experiment without promoting anything: the alias serves what it points at
    again, from the next request. The verdict as it reads now is kept."""
    with transaction.atomic():
        locked = _locked_experiment(experiment)
        verdict = experiment_verdict(locked, experiment_arm_results(locked))
        changed = state_set(
            locked,
            kind="experiment",
            target=ExperimentStatus.STOPPED,
            allowed=EXPERIMENT_TRANSITIONS,
            changes={"ended_at": timezone.now(), "ended_by": user, "conclusion": verdict.sentence},
        )
        locked.save(update_fields=changed)
    return locked


def experiment_conclude(*, experiment: Experiment, user: User) -> Experiment:
    """End the experiment by promoting its winning arm's version to production through the
    promotion gate (``registry.services.model_version_promote``), in one transaction: a
    refusal (no winner yet, a hosted baseline that won, the gate's own) leaves it running."""
    with transaction.atomic():
        locked = _locked_experiment(experiment)
        check_transition(
            kind="experiment",
            current=locked.status,
            target=ExperimentStatus.CONCLUDED,
            allowed=EXPERIMENT_TRANSITIONS,
        )
        verdict = experiment_verdict(locked, experiment_arm_results(locked))
        winner = verdict.winner
        if winner is None:
            raise ConflictError(
                f"No arm has won yet, so there is nothing to promote. {verdict.sentence} "
                "Let it run longer, or stop it to end it without a winner."
            )
        if winner.model_version is None:
            assert winner.base_model is not None
            raise ConflictError(
                f"The winner, {winner.name}, is the catalog base model "
                f"{winner.base_model.key} as it is (a hosted baseline): it is not a version "
                "of the registry, so it cannot be promoted. Stop the experiment, and train or "
                "register a version that does better."
            )
        version = winner.model_version
        current = production_version(locked.registered_model)
        promoted = None
        if current != version:
            model_version_promote(
                model_version=version,
                user=user,
                reason=f"Won the experiment '{locked.name}': {verdict.sentence}",
                expected_current_version=current.number if current else None,
            )
            promoted = version
        changed = state_set(
            locked,
            kind="experiment",
            target=ExperimentStatus.CONCLUDED,
            allowed=EXPERIMENT_TRANSITIONS,
            changes={
                "ended_at": timezone.now(),
                "ended_by": user,
                "conclusion": verdict.sentence,
                "promoted_version": promoted,
            },
        )
        locked.save(update_fields=changed)
    return locked


# --- fallback routes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSettings:
    """What a lead sets on an alias's fallback route: exactly one target, the primary's
    timeout and its circuit breaker."""

    fallback_version: ModelVersion | None
    fallback_base_model: BaseModel | None
    timeout_seconds: float = 30.0
    failures_to_open: int = 5
    cooldown_seconds: float = 30.0
    enabled: bool = True


def _refuse(field: str, message: str) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", extra={"field": field})


def _checked_route_settings(alias: Alias, wanted: RouteSettings) -> RouteSettings:
    """``wanted`` when it is a route this alias may have; else the field that is wrong.

    A target version must be another version of the alias's own registered model: a registered
    model is one task with one answer contract, so another model's version (or another
    project's, which the caller cannot even name) would answer a different question under this
    alias's name. A hosted answer to the same task is a catalog base model, which may be any
    active one the catalog offers.
    """
    version, base = wanted.fallback_version, wanted.fallback_base_model
    if (version is None) == (base is None):
        raise _refuse(
            "fallback_version",
            "give either a fallback version or a fallback base model (exactly one).",
        )
    model = alias.registered_model
    if version is not None:
        if version.registered_model_id != model.pk:
            raise _refuse(
                "fallback_version",
                f"must be a version of {model.name}, the model the alias '{alias.name}' "
                "belongs to; another model answers another task.",
            )
        if version.pk == alias.model_version_id:
            raise _refuse(
                "fallback_version",
                f"version {version.number} is what '{alias.name}' serves now; a fallback must "
                "be another version.",
            )
    if base is not None:
        today = timezone.now().date()
        if not base.is_active or (base.retires_at is not None and base.retires_at <= today):
            raise _refuse(
                "fallback_base_model", f"{base.key} is not offered by the catalog any more."
            )
    for field, value, low, high in (
        ("timeout_seconds", wanted.timeout_seconds, MIN_ROUTE_SECONDS, MAX_TIMEOUT_SECONDS),
        ("cooldown_seconds", wanted.cooldown_seconds, MIN_ROUTE_SECONDS, MAX_COOLDOWN_SECONDS),
        ("failures_to_open", wanted.failures_to_open, 1, MAX_FAILURES_TO_OPEN),
    ):
        if not math.isfinite(value) or not low <= value <= high:
            raise _refuse(field, f"a number from {low:g} to {high:g}.")
    return wanted


def _route_fields(wanted: RouteSettings, user: User) -> dict[str, object]:
    return {
        "fallback_version": wanted.fallback_version,
        "fallback_base_model": wanted.fallback_base_model,
        "timeout_seconds": float(wanted.timeout_seconds),
        "failures_to_open": int(wanted.failures_to_open),
        "cooldown_seconds": float(wanted.cooldown_seconds),
        "enabled": wanted.enabled,
        "updated_by": user,
    }


def fallback_route_create(*, alias: Alias, user: User, wanted: RouteSettings) -> FallbackRoute:
    """The alias's new fallback route; 409 when it has one already (change or remove that)."""
    checked = _checked_route_settings(alias, wanted)
    conflict = ConflictError(
        f"alias: {alias.registered_model.name}/{alias.name} has a fallback route already; "
        "change it or remove it first.",
        extra={"field": "alias"},
    )
    if FallbackRoute.objects.filter(alias=alias).exists():
        raise conflict
    try:
        # Its own savepoint: two concurrent creates for one alias meet the one-to-one
        # constraint, and the loser's error must not break the caller's transaction.
        with transaction.atomic():
            return FallbackRoute.objects.create(alias=alias, **_route_fields(checked, user))
    except IntegrityError:
        raise conflict from None


def fallback_route_change(
    *, route: FallbackRoute, user: User, wanted: RouteSettings
) -> FallbackRoute:
    """The route with new settings, checked as a new one's; the gateway reads it at the next
    request (and its breaker takes the new thresholds at its next failure)."""
    checked = _checked_route_settings(route.alias, wanted)
    for name, value in _route_fields(checked, user).items():
        setattr(route, name, value)
    route.save()
    return route


def fallback_route_remove(*, route: FallbackRoute) -> None:
    """The alias serves without a fallback from the next request on; logged requests that
    used the route keep their cause and reason (their link is cleared)."""
    route.delete()
