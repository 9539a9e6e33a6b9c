"""Application keys under concurrent requests, from real threads on real Postgres and Redis:
the per-minute count is exact across callers, and two creates of one name make one key."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from ftportal.errors import ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from serving.models import ApplicationKey
from serving.services import (
    CreatedApplicationKey,
    application_key_create,
    application_key_rate_check,
)
from tests.concurrency import at_once


@pytest.mark.django_db
def test_concurrent_requests_of_one_key_are_counted_exactly(
    project: Project, make_member: Callable[..., User]
) -> None:
    key = application_key_create(
        project=project, user=make_member(Role.ML_LEAD), name="busy", rate_limit_per_minute=10
    ).key
    # Mid-window, so that every call counts in the same window.
    moment = math.floor(time.time() / 60) * 60 + 30

    decisions = at_once([lambda: application_key_rate_check(key, now=moment)] * 25)

    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    assert all(d.retry_after_seconds == 30 for d in decisions if not d.allowed)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creates_of_one_name_make_one_key_and_the_other_gets_a_409(
    project: Project, make_member: Callable[..., User]
) -> None:
    lead = make_member(Role.ML_LEAD)

    def create() -> CreatedApplicationKey | ConflictError:
        try:
            return application_key_create(project=project, user=lead, name="twice")
        except ConflictError as conflict:
            return conflict

    answers = at_once([create, create, create])

    assert sum(isinstance(a, CreatedApplicationKey) for a in answers) == 1
    assert sum(isinstance(a, ConflictError) for a in answers) == 2
    assert ApplicationKey.objects.filter(name="twice").count() == 1
