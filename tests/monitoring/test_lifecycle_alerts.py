"""Retirement countdowns (``monitoring.lifecycle_alerts``) on a fixed clock: a production
version whose base model shuts down gets one alert per step (180, 90 and 30 days, then the day
itself), each step's alert replacing the one before, info, warning then critical; the end of
OpenAI's self-serve fine-tuning alerts a hosted production version and names the local path;
versions outside production, dates beyond 180 days and a second run the same day add nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from catalog.lifecycle import LifecycleEventKind
from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from ftportal.models import Project
from monitoring.alerts import alert_resolve
from monitoring.lifecycle_alerts import (
    LifecycleAlerted,
    countdown_step,
    lifecycle_alerts_check,
    lifecycle_events_of,
    lifecycle_key,
)
from monitoring.models import Alert, AlertKind, AlertState, Severity
from registry.models import PRODUCTION_ALIAS, Alias, ModelVersion
from tests.factories import fake_endpoint, registered_version

pytestmark = pytest.mark.django_db

SHUTDOWN = dt.date(2027, 6, 30)
OPENAI_FINE_TUNING_ENDS = dt.date(2027, 1, 6)
RETIRES = LifecycleEventKind.RETIRES


@pytest.fixture
def endpoint(db: None) -> Endpoint:
    return fake_endpoint(
        "http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
    )


@pytest.fixture
def hosted_base(endpoint: Endpoint, base_model: BaseModel) -> BaseModel:
    """A hosted base model that shuts down on SHUTDOWN; ``base_model``, the local SmolLM2,
    is in the catalog as the local path."""
    model, _ = BaseModel.objects.update_or_create(
        key="gpt-test-mini",
        defaults={
            "display_name": "GPT test mini",
            "provider": Provider.OPENAI,
            "endpoint": endpoint,
            "training_usd_per_million_tokens": Decimal("3.00"),
            "retires_at": SHUTDOWN,
        },
    )
    return model


@pytest.fixture
def version(project: Project, lead: User, hosted_base: BaseModel) -> ModelVersion:
    return to_production(
        registered_version(project, lead, hosted_base, fine_tuned_model="ft:gpt-test-mini:v1")
    )


def to_production(version: ModelVersion) -> ModelVersion:
    Alias.objects.update_or_create(
        registered_model=version.registered_model,
        name=PRODUCTION_ALIAS,
        defaults={"model_version": version},
    )
    return version


def day(days_before_shutdown: int) -> dt.date:
    return SHUTDOWN - dt.timedelta(days=days_before_shutdown)


def check(today: dt.date, hour: int = 9) -> list[LifecycleAlerted]:
    now = dt.datetime.combine(today, dt.time(hour), tzinfo=dt.UTC)
    return lifecycle_alerts_check(today=today, now=now)


def unresolved() -> list[Alert]:
    return list(Alert.objects.exclude(state=AlertState.RESOLVED).order_by("id"))


# --- the countdown --------------------------------------------------------------------------


def test_the_countdown_raises_one_alert_per_step_each_replacing_the_one_before(
    version: ModelVersion,
) -> None:
    # 200 days before: nothing yet.
    assert check(day(200)) == []
    assert Alert.objects.count() == 0

    # 170 days before: the 180-day alert, for information.
    check(day(170))
    [first] = unresolved()
    assert first.key == f"lifecycle:{version.pk}:retires:180"
    assert (first.kind, first.severity) == (AlertKind.LIFECYCLE, Severity.INFO)
    assert (first.model_version_id, first.registered_model_id) == (
        version.pk,
        version.registered_model_id,
    )
    assert first.title == "triage v1 stops serving on 2027-06-30 (in 170 days)"
    assert first.message.startswith(
        "GPT test mini shuts down on 2027-06-30, and every model fine-tuned from it stops "
        "serving with it. 170 days left: triage v1, in production, stops serving on 2027-06-30"
    )
    assert "local LoRA trainer" in first.message
    assert "SmolLM2-135M-Instruct" in first.message
    assert first.message.endswith("The project's retraining proposal page can prefill it.")

    # 85 days before: the 90-day warning; the 180-day alert resolved by itself.
    check(day(85))
    [second] = unresolved()
    assert second.key == f"lifecycle:{version.pk}:retires:90"
    assert second.severity == Severity.WARNING
    assert "85 days left" in second.message
    first.refresh_from_db()
    assert first.state == AlertState.RESOLVED
    assert first.resolved_by is None
    assert first.resolution == "Replaced by the 90-day alert."

    # 20 days before: critical.
    check(day(20))
    [third] = unresolved()
    assert (third.key, third.severity) == (f"lifecycle:{version.pk}:retires:30", Severity.CRITICAL)
    assert third.title == "triage v1 stops serving on 2027-06-30 (in 20 days)"

    # Three days after: shut down, critical.
    check(day(-3))
    [last] = unresolved()
    assert (last.key, last.severity) == (f"lifecycle:{version.pk}:retires:0", Severity.CRITICAL)
    assert last.title == "triage v1 was shut down on 2027-06-30 (3 days ago)"
    assert last.message.startswith("GPT test mini shut down on 2027-06-30")
    assert (
        "In production, triage v1 has not answered since 2027-06-30 (3 days ago): move "
        "production to another version." in last.message
    )
    third.refresh_from_db()
    assert third.resolution == "Replaced by the alert of the day itself."
    assert Alert.objects.count() == 4


def test_steps_are_the_smallest_reached() -> None:
    assert [countdown_step(n) for n in (181, 180, 91, 90, 31, 30, 1, 0, -5)] == [
        None,
        180,
        180,
        90,
        90,
        30,
        30,
        0,
        0,
    ]


def test_checking_twice_a_day_keeps_one_alert_notified_once(version: ModelVersion) -> None:
    [first] = check(day(170), hour=9)
    [again] = check(day(170), hour=15)
    [alert] = Alert.objects.all()
    assert (first.created, again.created) == (True, False)
    assert alert.times_raised == 2
    assert alert.last_notified_at == dt.datetime.combine(day(170), dt.time(9), tzinfo=dt.UTC)
    # The next day too: the same step's alert, not notified again.
    check(day(169))
    alert.refresh_from_db()
    assert alert.times_raised == 3
    assert alert.last_notified_at == dt.datetime.combine(day(170), dt.time(9), tzinfo=dt.UTC)


def test_the_end_of_openai_fine_tuning_alerts_a_hosted_production_version_with_the_local_path(
    endpoint: Endpoint, hosted_base: BaseModel, version: ModelVersion
) -> None:
    endpoint.fine_tuning_ends_at = OPENAI_FINE_TUNING_ENDS
    endpoint.save()
    # As the catalog is seeded: the base takes no new jobs from the same day.
    hosted_base.deprecated_at = OPENAI_FINE_TUNING_ENDS
    hosted_base.save()
    today = dt.date(2026, 12, 1)  # 36 days before; the shutdown is 211 days away

    check(today)

    # One alert: the endpoint's end, which covers the base's deprecation of the same day.
    [alert] = unresolved()
    assert alert.key == lifecycle_key(version.pk, LifecycleEventKind.FINE_TUNING_ENDS, 90)
    assert alert.severity == Severity.WARNING
    assert alert.title == (
        "triage v1 can no longer be retrained at its endpoint from 2027-01-06 (in 36 days)"
    )
    assert alert.message.startswith(
        f"The endpoint {endpoint.name} (OpenAI API) accepts no new fine-tuning jobs from "
        "2027-01-06: retraining after that needs another provider or a local base model. "
        "36 days left to retrain triage v1, in production, the same way"
    )
    assert (
        "One option is the local path: retraining on a local base model with the local LoRA "
        "trainer (the catalog's active local base models: " in alert.message
    )
    assert "SmolLM2-135M-Instruct" in alert.message

    # The selector pages read says the same, past and future events alike.
    events = lifecycle_events_of(version, today)
    assert [(e.kind, e.date, e.days_left, e.stops_serving) for e in events] == [
        (LifecycleEventKind.DEPRECATED, OPENAI_FINE_TUNING_ENDS, 36, False),
        (LifecycleEventKind.FINE_TUNING_ENDS, OPENAI_FINE_TUNING_ENDS, 36, False),
        (RETIRES, SHUTDOWN, 211, True),
    ]


def test_only_the_first_end_of_each_consequence_is_counted_down(
    endpoint: Endpoint, hosted_base: BaseModel, version: ModelVersion
) -> None:
    # Fine-tuned models stop serving 60 days before the base shuts down; the base takes no
    # new jobs 10 days before the endpoint stops taking any.
    hosted_base.fine_tuned_inference_ends_at = SHUTDOWN - dt.timedelta(days=60)
    hosted_base.deprecated_at = SHUTDOWN - dt.timedelta(days=100)
    hosted_base.save()
    endpoint.fine_tuning_ends_at = SHUTDOWN - dt.timedelta(days=90)
    endpoint.save()

    check(day(120))  # 60, 20 and 30 days left

    assert sorted(alert.key for alert in unresolved()) == [
        f"lifecycle:{version.pk}:deprecated:30",
        f"lifecycle:{version.pk}:inference_ends:90",
    ]
    inference = Alert.objects.get(key__contains="inference_ends")
    assert inference.title == "triage v1 stops serving on 2027-05-01 (in 60 days)"
    assert inference.message.startswith(
        "Models fine-tuned from GPT test mini stop serving on 2027-05-01."
    )

    # The deprecation is withdrawn: the endpoint's end comes first now.
    hosted_base.deprecated_at = None
    hosted_base.save()
    check(day(119))
    assert sorted(alert.key for alert in unresolved()) == [
        f"lifecycle:{version.pk}:fine_tuning_ends:30",
        f"lifecycle:{version.pk}:inference_ends:90",
    ]


def test_a_version_outside_production_gets_no_alert_and_leaving_production_clears_it(
    project: Project, lead: User, hosted_base: BaseModel, version: ModelVersion
) -> None:
    # Another version of the same model, and a model with no production alias at all.
    newer = registered_version(project, lead, hosted_base, fine_tuned_model="ft:gpt-test-mini:v2")
    registered_version(project, lead, hosted_base, fine_tuned_model="ft:gpt-test-mini:other")
    check(day(100))
    assert [alert.model_version_id for alert in unresolved()] == [version.pk]

    # Production moves to the newer version (same base): its own alert; the old one resolved.
    to_production(newer)
    check(day(99))
    [alert] = unresolved()
    assert alert.model_version_id == newer.pk
    old = Alert.objects.get(model_version_id=version.pk)
    assert old.resolution == "The version is no longer behind a production alias."


def test_a_date_moved_beyond_180_days_clears_its_alert(
    hosted_base: BaseModel, version: ModelVersion
) -> None:
    check(day(100))
    hosted_base.retires_at = SHUTDOWN + dt.timedelta(days=200)
    hosted_base.save()
    assert [done.cleared for done in check(day(99))] == [True]
    [alert] = Alert.objects.all()
    assert alert.state == AlertState.RESOLVED
    assert alert.resolution == (
        "The date moved beyond 180 days or was removed, or an end with the same consequence now "
        "comes first."
    )


def test_a_step_a_person_resolved_is_not_raised_again_but_the_next_step_is(
    lead: User, version: ModelVersion
) -> None:
    check(day(150))
    [alert] = Alert.objects.all()
    alert_resolve(alert=alert, user=lead, note="we retrain locally next month")
    check(day(149))
    assert unresolved() == []
    check(day(89))
    [warning] = unresolved()
    assert warning.key.endswith(":retires:90")


def test_the_daily_task_counts_the_alerts_it_made(
    hosted_base: BaseModel, version: ModelVersion
) -> None:
    # Imported here: the task module loads every monitor, and only this test needs it.
    from monitoring.tasks import lifecycle_alerts_check_daily

    # The task reads the clock: the shutdown is put 10 days from the clock's today.
    hosted_base.retires_at = timezone.localdate() + dt.timedelta(days=10)
    hosted_base.save()
    assert lifecycle_alerts_check_daily() == 1
    assert lifecycle_alerts_check_daily() == 0
    [alert] = Alert.objects.all()
    assert (alert.key, alert.times_raised) == (f"lifecycle:{version.pk}:retires:30", 2)
