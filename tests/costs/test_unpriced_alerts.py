"""Unpriced spends are alerted: the first spend of a month without a price for something makes
one alert, e-mailed to the project's managers, ML leads and admins (not its reviewers), and
listed on the dashboard; more spends with the same gap make no more; another gap makes its
own; a spend rolled back makes none."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction
from django.test import Client

from costs.models import UnpricedAlert
from ftportal.models import Project
from ftportal.roles import Role
from ftportal.spending import TOKENS_PER_PRICE, Spend, SpendKind, SpendUnit, spend_record

pytestmark = pytest.mark.django_db
NOV_3 = dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC)


def unpriced(project: Project, event: str, source: str, at: dt.datetime = NOV_3) -> Spend:
    return Spend(
        project_id=project.pk,
        kind=SpendKind.SERVING,
        quantity=Decimal(1500),
        unit=SpendUnit.TOKENS,
        price=None,
        price_per=TOKENS_PER_PRICE,
        price_source=source,
        event=event,
        origin="Gateway: 3 requests",
        occurred_at=at,
    )


def member(make_member: Callable[..., User], role: Role, email: str) -> User:
    user = make_member(role)
    user.email = email
    user.save()
    return user


def test_the_first_unpriced_spend_of_a_gap_alerts_once_by_mail_and_on_the_dashboard(
    project: Project,
    make_member: Callable[..., User],
    client: Client,
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    manager = member(make_member, Role.MANAGER, "manager@example.com")
    member(make_member, Role.ML_LEAD, "lead@example.com")
    member(make_member, Role.REVIEWER, "reviewer@example.com")
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[attr-defined]
        spend_record(unpriced(project, "b1", "no price for ft:gpt-x"))
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[attr-defined]
        spend_record(unpriced(project, "b2", "no price for ft:gpt-x"))
    (alert,) = UnpricedAlert.objects.all()
    assert (alert.month, alert.subject, alert.first_event) == (
        dt.date(2026, 11, 1),
        "no price for ft:gpt-x",
        "b1",
    )
    assert sorted(message.to[0] for message in mail.outbox) == [
        "lead@example.com",
        "manager@example.com",
    ]
    assert "1500 tokens without a price (no price for ft:gpt-x)" in mail.outbox[0].body
    assert alert.notified.split("\n") == ["lead@example.com", "manager@example.com"]
    # Another gap, and the same gap next month, each alert once more.
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[attr-defined]
        spend_record(unpriced(project, "b3", "no price for claude-x"))
        spend_record(
            unpriced(project, "b4", "no price for ft:gpt-x", at=NOV_3 + dt.timedelta(days=30))
        )
    assert UnpricedAlert.objects.count() == 3 and len(mail.outbox) == 6

    client.force_login(manager)
    page = client.get("/costs/", {"start": "2026-11-01", "end": "2026-12-31"}).content.decode()
    assert 'id="unpriced-alerts"' in page and "no price for claude-x" in page


def test_a_rolled_back_unpriced_spend_alerts_nothing(
    project: Project, django_capture_on_commit_callbacks: Callable[..., object]
) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True),  # type: ignore[attr-defined]
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        spend_record(unpriced(project, "gone", "no price for ft:gpt-x"))
        raise RuntimeError("the batch failed")
    assert UnpricedAlert.objects.count() == 0 and mail.outbox == []
