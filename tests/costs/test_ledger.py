"""The cost ledger (``costs``): every spend one append-only row, priced exactly in Decimal, an
unpriced spend recorded as unpriced (never $0), a spend reported twice written once; training
jobs write theirs (local attempts by worker time, hosted jobs by trained tokens)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured

from catalog.models import BaseModel, Provider
from costs.models import LedgerChangeRefused, LedgerEntry
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from ftportal.models import Project
from ftportal.spending import (
    SECONDS_PER_PRICE,
    TOKENS_PER_PRICE,
    Spend,
    SpendKind,
    SpendUnit,
    spend_record,
    spend_recorded,
)
from tests.factories import frozen_version
from tests.training.test_hosted import hosted_model, job, poll_to_the_end  # noqa: F401
from training.hosted import training_job_submit
from training.models import JobStatus, TrainingJob
from training.services import cost_record
from training.spending import local_attempt_spend_record

pytestmark = pytest.mark.django_db


def a_spend(project: Project, **given: object) -> Spend:
    fields: dict[str, object] = {
        "project_id": project.pk,
        "kind": SpendKind.EVALUATION,
        "quantity": Decimal(1234),
        "unit": SpendUnit.TOKENS,
        "price": Decimal("3.00"),
        "price_per": TOKENS_PER_PRICE,
        "price_source": "catalog: gpt-4o-mini input price",
        "event": "eval_run:1:candidate:1",
        "origin": "Evaluation run 1",
        **given,
    }
    return Spend(**fields)  # type: ignore[arg-type]


# --- amounts, worked out by hand ------------------------------------------------------------------


def test_amounts_are_exact_decimals_of_the_quantity_at_its_price(project: Project) -> None:
    # 1,234 tokens at $3 a million: 1234 x 3 / 1,000,000 = 0.003702.
    assert a_spend(project).amount == Decimal("0.003702")
    # 90 s of worker time at $0.10 an hour: 90 x 0.10 / 3600 = 0.0025.
    compute = a_spend(
        project,
        quantity=Decimal(90),
        unit=SpendUnit.COMPUTE_SECONDS,
        price=Decimal("0.10"),
        price_per=SECONDS_PER_PRICE,
    )
    assert compute.amount == Decimal("0.0025")
    # 7 s at $0.10 an hour: 0.000194444... kept to 8 places: 0.00019444.
    assert a_spend(
        project,
        quantity=Decimal(7),
        unit=SpendUnit.COMPUTE_SECONDS,
        price=Decimal("0.10"),
        price_per=SECONDS_PER_PRICE,
    ).amount == Decimal("0.00019444")


def test_a_spend_becomes_one_ledger_row_and_a_second_report_of_it_adds_nothing(
    project: Project,
) -> None:
    spend_record(a_spend(project))
    spend_record(a_spend(project))  # a retried task reporting the same spend

    [entry] = LedgerEntry.objects.all()
    assert entry.project == project
    assert entry.kind == SpendKind.EVALUATION
    assert entry.quantity == Decimal(1234) and entry.unit == SpendUnit.TOKENS
    assert entry.price == Decimal("3.00") and entry.price_per == TOKENS_PER_PRICE
    assert entry.amount == Decimal("0.003702")
    assert entry.price_source == "catalog: gpt-4o-mini input price"


def test_an_unpriced_spend_is_recorded_as_unpriced_and_said_never_as_zero(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costs.services"):
        spend_record(a_spend(project, price=None, price_source="catalog: no price"))

    [entry] = LedgerEntry.objects.all()
    assert entry.amount is None and not entry.priced
    assert "unpriced" in str(entry)
    assert any("Unpriced spend" in record.getMessage() for record in caplog.records)


def test_ledger_rows_are_never_changed_or_deleted(project: Project) -> None:
    spend_record(a_spend(project))
    entry = LedgerEntry.objects.get()

    entry.amount = Decimal(0)
    with pytest.raises(LedgerChangeRefused):
        entry.save()
    with pytest.raises(LedgerChangeRefused):
        LedgerEntry.objects.update(amount=Decimal(0))
    with pytest.raises(LedgerChangeRefused):
        LedgerEntry.objects.all().delete()
    with pytest.raises(LedgerChangeRefused):
        entry.delete()
    assert LedgerEntry.objects.get().amount == Decimal("0.003702")


def test_a_deleted_project_takes_its_rows_with_it(project: Project) -> None:
    spend_record(a_spend(project))
    project.delete()
    assert not LedgerEntry.objects.exists()


def test_a_spend_with_no_ledger_to_receive_it_is_an_error_not_lost(project: Project) -> None:
    receivers = spend_recorded.receivers
    spend_recorded.receivers = []
    spend_recorded.sender_receivers_cache.clear()
    try:
        with pytest.raises(ImproperlyConfigured):
            spend_record(a_spend(project))
    finally:
        spend_recorded.receivers = receivers
        spend_recorded.sender_receivers_cache.clear()


# --- training ------------------------------------------------------------------------------------


def test_each_local_attempt_is_its_worker_time_at_the_hosts_hourly_rate(
    project: Project, lead: User, base_model: BaseModel, settings: object
) -> None:
    settings.FTPORTAL_LOCAL_USD_PER_HOUR = "0.10"  # type: ignore[attr-defined]
    local_job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=Provider.LOCAL,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
    )
    local_attempt_spend_record(local_job, attempt=1, seconds=90.0)
    local_attempt_spend_record(local_job, attempt=2, seconds=36.5)
    local_attempt_spend_record(local_job, attempt=2, seconds=36.5)  # the same attempt again

    rows = list(LedgerEntry.objects.filter(training_job=local_job).order_by("event"))
    assert [row.event for row in rows] == [
        f"training_job:{local_job.pk}:attempt:1",
        f"training_job:{local_job.pk}:attempt:2",
    ]
    assert all(row.kind == SpendKind.TRAINING for row in rows)
    assert all(row.unit == SpendUnit.COMPUTE_SECONDS for row in rows)
    # 90 s and 36.5 s at $0.10 an hour: 0.0025 and 36.5 x 0.10 / 3600 = 0.00101388...
    assert [row.amount for row in rows] == [Decimal("0.0025"), Decimal("0.00101389")]
    assert all(
        row.price_source.startswith("FTPORTAL_LOCAL_USD_PER_HOUR on worker ") for row in rows
    )
    # Our own hardware: no provider bills it, so there is nothing to reconcile it with.
    assert all(row.endpoint_id is None for row in rows)
    # The job's actual cost is what the ledger holds for it, to the column's 4 places:
    # 0.0025 + 0.00101389 = 0.00351389, kept as 0.0035.
    cost_record(local_job, "two attempts")
    local_job.refresh_from_db()
    assert local_job.actual_cost_usd == Decimal("0.0035")
    # A job with an unpriced spend has no known total, never one that counts it as $0.
    spend_record(
        a_spend(project, event="unpriced-tokens", price=None, training_job_id=local_job.pk)
    )
    cost_record(local_job, "with an unpriced spend")
    local_job.refresh_from_db()
    assert local_job.actual_cost_usd is None


def test_a_hosted_job_that_succeeds_writes_its_trained_tokens_at_the_catalog_price(
    request: pytest.FixtureRequest, fake_openai: FakeOpenAIServer
) -> None:
    # test_hosted's job: a hosted job on the fake fine-tuning API at $3 a million tokens.
    hosted: TrainingJob = request.getfixturevalue("job")
    training_job_submit(job_id=hosted.pk)
    poll_to_the_end(hosted)
    assert hosted.status == JobStatus.SUCCEEDED, hosted.error

    [entry] = LedgerEntry.objects.filter(training_job=hosted)
    assert entry.kind == SpendKind.TRAINING and entry.unit == SpendUnit.TOKENS
    assert entry.quantity == hosted.trained_tokens > 0
    assert entry.price == Decimal("3.00") and entry.price_per == TOKENS_PER_PRICE
    assert entry.amount == Decimal(hosted.trained_tokens) * 3 / 10**6
    assert entry.project_id == hosted.project_id
    # Billed by the endpoint the job was submitted to: its base model's, the fake API's.
    assert entry.endpoint is not None
    assert entry.endpoint == hosted.base_model.endpoint
    assert entry.endpoint.url == fake_openai.base_url
