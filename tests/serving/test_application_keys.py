"""Application keys, as the gateway will use them: created with the secret shown once and
stored hashed, refused with the right status for every way a key can be wrong, revoked at once,
rate-limited per minute in Redis, and cheap to use (last_used_at is not a write per request)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from redis import Redis

from ftportal.errors import ApplicationError, ConflictError
from ftportal.hashed_secrets import secret_sha256
from ftportal.models import Project
from ftportal.roles import Role
from serving.models import ApplicationKey
from serving.services import (
    ApplicationKeyRefused,
    KeyRefusal,
    application_key_authenticate,
    application_key_create,
    application_key_rate_check,
    application_key_revoke,
    key_from_authorization,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead_user(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


def refusal(raw_key: str | None, *, project: Project | None = None) -> ApplicationKeyRefused:
    with pytest.raises(ApplicationKeyRefused) as refused:
        application_key_authenticate(raw_key, project=project)
    return refused.value


# --- create ------------------------------------------------------------------------------------


def test_a_new_key_is_answered_once_and_only_its_hash_is_stored(
    project: Project, lead_user: User
) -> None:
    created = application_key_create(project=project, user=lead_user, name="support bot")

    prefix, _, secret = created.plaintext.partition(".")
    row = ApplicationKey.objects.get()
    assert row.prefix == prefix and prefix.startswith("ftp_") and len(prefix) == 16
    assert row.secret_sha256 == secret_sha256(secret)
    # Nothing stored holds the secret itself.
    stored = [str(value) for value in ApplicationKey.objects.values().get().values()]
    assert not any(secret in value for value in stored)
    assert row.created_by == lead_user
    assert row.rate_limit_per_minute == 600  # the settings' default
    assert row.expires_at is None and row.revoked_at is None and row.last_used_at is None


def test_a_key_takes_its_own_rate_limit_and_expiry(project: Project, lead_user: User) -> None:
    expiry = timezone.now() + timedelta(days=7)
    created = application_key_create(
        project=project,
        user=lead_user,
        name="batch",
        expires_at=expiry,
        rate_limit_per_minute=30,
    )
    assert created.key.rate_limit_per_minute == 30
    assert created.key.expires_at == expiry


@override_settings(FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE=42)
def test_the_default_rate_limit_comes_from_settings(project: Project, lead_user: User) -> None:
    created = application_key_create(project=project, user=lead_user, name="default")
    assert created.key.rate_limit_per_minute == 42


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": 1_000_001}, "rate_limit_per_minute"),
        ({"expires_at": "past"}, "expires_at"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    project: Project, lead_user: User, changes: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"name": "ok", **changes}
    if arguments.get("expires_at") == "past":
        arguments["expires_at"] = timezone.now() - timedelta(minutes=1)
    with pytest.raises(ApplicationError) as refused:
        application_key_create(project=project, user=lead_user, **arguments)  # type: ignore[arg-type]
    assert refused.value.extra == {"field": field}
    assert refused.value.message.startswith(f"{field}:")
    assert not ApplicationKey.objects.exists()


def test_two_live_keys_of_a_project_do_not_share_a_name_but_a_revoked_ones_name_is_free(
    project: Project, lead_user: User
) -> None:
    first = application_key_create(project=project, user=lead_user, name="app")
    with pytest.raises(ConflictError):
        application_key_create(project=project, user=lead_user, name=" app ")
    application_key_revoke(key=first.key, user=lead_user)
    application_key_create(project=project, user=lead_user, name="app")
    assert ApplicationKey.objects.filter(name="app").count() == 2


# --- authenticate ------------------------------------------------------------------------------


def test_a_good_key_is_accepted_for_its_project_and_without_one(
    project: Project, lead_user: User
) -> None:
    created = application_key_create(project=project, user=lead_user, name="app")

    assert application_key_authenticate(created.plaintext, project=project) == created.key
    assert application_key_authenticate(created.plaintext).project == project


def test_the_bearer_header_the_openai_client_sends_gives_the_key() -> None:
    assert key_from_authorization("Bearer ftp_0123456789ab.secret") == "ftp_0123456789ab.secret"
    assert key_from_authorization("bearer  abc ") == "abc"
    assert key_from_authorization(None) is None
    assert key_from_authorization("") is None
    # Another scheme is handed on whole, to be refused as malformed.
    assert key_from_authorization("Token abc") == "Token abc"


@pytest.mark.parametrize("raw", [None, ""])
def test_no_key_is_refused_with_401(raw: str | None) -> None:
    refused = refusal(raw)
    assert (refused.status_code, refused.reason) == (401, KeyRefusal.MISSING)
    assert "Authorization: Bearer" in refused.message


@pytest.mark.parametrize(
    "raw",
    [
        "sk-not-ours",
        "ftp_0123456789ab",
        "ftp_0123456789ab.",
        "ftp_0123456789AB." + "a" * 43,
        "ftp_0123456789ab." + "a" * 42,
        "ftp_0123456789ab." + "a" * 43 + "\n",
        "ftp_0123456789ab." + "é" * 43,
        "x" * 10_000,
    ],
)
def test_a_malformed_key_is_refused_with_401(raw: str) -> None:
    refused = refusal(raw)
    assert (refused.status_code, refused.reason) == (401, KeyRefusal.MALFORMED)


def test_an_unknown_key_and_a_wrong_secret_are_refused_alike_with_401(
    project: Project, lead_user: User
) -> None:
    created = application_key_create(project=project, user=lead_user, name="app")
    prefix = created.key.prefix
    unknown = refusal("ftp_000000000000." + "a" * 43)
    wrong_secret = refusal(f"{prefix}." + "a" * 43)

    assert (unknown.status_code, unknown.reason) == (401, KeyRefusal.UNKNOWN)
    # Nothing in the answer tells that the prefix exists.
    assert (wrong_secret.status_code, wrong_secret.reason, wrong_secret.message) == (
        401,
        KeyRefusal.UNKNOWN,
        unknown.message,
    )
    assert ApplicationKey.objects.get().last_used_at is None


def test_a_revoked_key_is_refused_at_its_next_request(project: Project, lead_user: User) -> None:
    created = application_key_create(project=project, user=lead_user, name="app")
    application_key_authenticate(created.plaintext, project=project)

    application_key_revoke(key=created.key, user=lead_user)

    refused = refusal(created.plaintext, project=project)
    assert (refused.status_code, refused.reason) == (401, KeyRefusal.REVOKED)
    assert created.key.revoked_by == lead_user


def test_revoking_twice_keeps_the_first_revocation(project: Project, lead_user: User) -> None:
    created = application_key_create(project=project, user=lead_user, name="app")
    first = application_key_revoke(key=created.key, user=lead_user).revoked_at
    again = application_key_revoke(key=ApplicationKey.objects.get(), user=lead_user)
    assert again.revoked_at == first


def test_an_expired_key_is_refused_with_401(project: Project, lead_user: User) -> None:
    created = application_key_create(
        project=project,
        user=lead_user,
        name="app",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    ApplicationKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    refused = refusal(created.plaintext, project=project)
    assert (refused.status_code, refused.reason) == (401, KeyRefusal.EXPIRED)
    assert "expired at" in refused.message


def test_another_projects_key_is_refused_with_403(project: Project, lead_user: User) -> None:
    other = Project.objects.create(name="Other")
    created = application_key_create(project=other, user=lead_user, name="theirs")

    refused = refusal(created.plaintext, project=project)

    assert (refused.status_code, refused.reason) == (403, KeyRefusal.OTHER_PROJECT)
    # Not even recorded as used: it served nothing.
    assert ApplicationKey.objects.get().last_used_at is None


def test_last_used_is_written_at_most_once_a_minute(project: Project, lead_user: User) -> None:
    created = application_key_create(project=project, user=lead_user, name="app")
    application_key_authenticate(created.plaintext)
    first = ApplicationKey.objects.get().last_used_at
    assert first is not None

    with CaptureQueriesContext(connection) as queries:
        application_key_authenticate(created.plaintext)
    assert len(queries) == 1  # the lookup only: no write
    assert not any(q["sql"].startswith("UPDATE") for q in queries.captured_queries)
    assert ApplicationKey.objects.get().last_used_at == first

    ApplicationKey.objects.update(last_used_at=first - timedelta(seconds=61))
    application_key_authenticate(created.plaintext)
    assert ApplicationKey.objects.get().last_used_at > first  # type: ignore[operator]


# --- rate limit --------------------------------------------------------------------------------


def window_start() -> float:
    """The start of the current one-minute window, so a test's times fall in windows no other
    run of this test has counted in."""
    return math.floor(time.time() / 60) * 60


def test_the_rate_limit_answers_retry_after_past_the_limit_and_allows_in_the_next_window(
    project: Project, lead_user: User
) -> None:
    key = application_key_create(
        project=project, user=lead_user, name="app", rate_limit_per_minute=3
    ).key
    start = window_start()

    decisions = [application_key_rate_check(key, now=start + 10 + i) for i in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]

    over = application_key_rate_check(key, now=start + 15.5)
    assert not over.allowed
    assert over.retry_after_seconds == 45  # what is left of the window, rounded up
    assert over.limit == 3 and over.remaining == 0
    assert not application_key_rate_check(key, now=start + 59.9).allowed
    assert application_key_rate_check(key, now=start + 59.9).retry_after_seconds == 1

    next_window = application_key_rate_check(key, now=start + 60)
    assert next_window.allowed and next_window.remaining == 2


def test_a_decision_gives_the_headers_of_its_answer(project: Project, lead_user: User) -> None:
    key = application_key_create(
        project=project, user=lead_user, name="app", rate_limit_per_minute=1
    ).key
    start = window_start()

    allowed = application_key_rate_check(key, now=start + 1).headers()
    refused = application_key_rate_check(key, now=start + 50).headers()

    assert allowed == {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}
    assert refused == {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "Retry-After": "10",
        "x-ratelimit-reset-requests": "10s",
    }


def test_each_key_has_its_own_count(project: Project, lead_user: User) -> None:
    first = application_key_create(
        project=project, user=lead_user, name="a", rate_limit_per_minute=1
    ).key
    second = application_key_create(
        project=project, user=lead_user, name="b", rate_limit_per_minute=1
    ).key
    start = window_start()

    assert application_key_rate_check(first, now=start + 1).allowed
    assert not application_key_rate_check(first, now=start + 2).allowed
    assert application_key_rate_check(second, now=start + 3).allowed


def test_the_counter_lives_in_redis_and_expires_by_itself(
    project: Project, lead_user: User
) -> None:
    key = application_key_create(project=project, user=lead_user, name="app").key
    start = window_start()
    application_key_rate_check(key, now=start + 1)

    counter = cache.make_key(f"serving:rate:{key.pk}:{int(start // 60)}")
    redis = Redis.from_url(settings.CACHES["default"]["LOCATION"])
    assert int(redis.get(counter) or 0) == 1
    assert 0 < redis.ttl(counter) <= 120


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # Nothing listens here: Redis is down.
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
)
def test_with_redis_down_the_limit_fails_open_and_says_it_did_not_count(
    project: Project, lead_user: User, caplog: pytest.LogCaptureFixture
) -> None:
    key = application_key_create(
        project=project, user=lead_user, name="app", rate_limit_per_minute=1
    ).key

    decisions = [application_key_rate_check(key) for _ in range(3)]

    assert all(d.allowed and not d.counted for d in decisions)
    assert key.prefix in caplog.text
