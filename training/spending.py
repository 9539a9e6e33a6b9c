"""A training job's spends for the ledger (``ftportal.spending``): each attempt's worker time on
a local job, the trained tokens of a hosted one."""

from __future__ import annotations

from decimal import Decimal

from ftportal.spending import (
    TOKENS_PER_PRICE,
    Spend,
    SpendKind,
    SpendUnit,
    spend_record,
    worker_time_spend,
)

from .models import TrainingJob


def local_attempt_spend_record(job: TrainingJob, *, attempt: int, seconds: float) -> None:
    """One attempt's worker time, at this worker's hourly rate."""
    spend_record(
        worker_time_spend(
            project_id=job.project_id,
            kind=SpendKind.TRAINING,
            seconds=seconds,
            event=f"training_job:{job.pk}:attempt:{attempt}",
            origin=f"Training job {job.pk} ({job.model_name}), attempt {attempt} on "
            f"{job.device or 'cpu'}",
            training_job_id=job.pk,
        )
    )


def hosted_spend_record(job: TrainingJob, *, trained_tokens: int) -> None:
    """The trained tokens of a hosted job that succeeded, at its base model's training price
    in the catalog (unpriced when it has none), billed by the base model's endpoint (where the
    job was submitted: ``catalog.adapters.hosted_fine_tuner_for``)."""
    base_model = job.base_model
    spend_record(
        Spend(
            project_id=job.project_id,
            kind=SpendKind.TRAINING,
            quantity=Decimal(trained_tokens),
            unit=SpendUnit.TOKENS,
            price=base_model.training_usd_per_million_tokens,
            price_per=TOKENS_PER_PRICE,
            price_source=f"catalog: {base_model.key}'s training price"
            if base_model.training_usd_per_million_tokens is not None
            else f"catalog: {base_model.key} has no training price",
            event=f"training_job:{job.pk}:hosted",
            origin=f"Training job {job.pk} ({job.model_name}) at {job.provider}",
            training_job_id=job.pk,
            endpoint_id=base_model.endpoint_id,
        )
    )
