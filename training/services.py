"""Writes for training: launch, run (in the worker), cancel."""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from datasets.models import DatasetVersion, Split
from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from ftportal.state import check_transition
from providers.base import ProviderError, TrainingCancelled, TrainingConfig, TrainingProgress

from .models import JOB_TRANSITIONS, BaseModel, JobStatus, Provider, TrainingJob, TrainingMetric

logger = logging.getLogger(__name__)

# Bounds that catch typos without second-guessing the user; the guide says 3 to 5 epochs.
HYPERPARAMETER_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 20),
    "learning_rate": (1e-6, 1e-2),
    "batch_size": (1, 128),
    "lora_r": (1, 256),
    "lora_alpha": (1, 512),
    "lora_dropout": (0.0, 0.9),
    "max_seq_len": (32, 8192),
    "seed": (0, 2**31 - 1),
    "max_steps": (1, 1_000_000),
    "eval_every_steps": (1, 100_000),
}


FLOAT_HYPERPARAMETERS = frozenset({"learning_rate", "lora_dropout"})


def _as_number(value: Any) -> float | None:
    # bool is an int to Python, but `"epochs": true` is a client bug, not 1 epoch.
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _hyperparameter(name: str, value: Any, *, integer: bool) -> float | int:
    field = f"hyperparameters.{name}"
    number = _as_number(value)
    if number is None:
        raise ApplicationError(
            f"{field}: expected a number, got {value!r}.", extra={"field": field}
        )
    if integer and not number.is_integer():
        raise ApplicationError(
            f"{field}: expected a whole number, got {value!r}.", extra={"field": field}
        )
    low, high = HYPERPARAMETER_BOUNDS[name]
    if not low <= number <= high:
        raise ApplicationError(
            f"{field}: {value} is outside the allowed range {low} to {high}.",
            extra={"field": field},
        )
    return int(number) if integer else number


def training_config_from(raw: dict[str, Any]) -> TrainingConfig:
    """Validate hyperparameters and fill in defaults; each error names the field."""
    unknown = sorted(set(raw) - {f.name for f in fields(TrainingConfig)})
    if unknown:
        raise ApplicationError(f"Unknown hyperparameter(s): {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or value == "":
            continue
        values[name] = _hyperparameter(name, value, integer=name not in FLOAT_HYPERPARAMETERS)
    return TrainingConfig(**values)


def training_job_create(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    user: User,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str = "",
) -> TrainingJob:
    if dataset_version.dataset.project_id != project.pk:
        raise ApplicationError("The dataset version belongs to another project.")
    if not base_model.is_active:
        raise ApplicationError(f"Base model '{base_model.key}' is retired and cannot be trained.")
    config = training_config_from(hyperparameters or {})
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=dataset_version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters=asdict(config),
        model_name=model_name.strip() or f"{dataset_version.dataset.name}-ft",
        created_by=user,
    )
    from .tasks import run_training_job

    transaction.on_commit(lambda: run_training_job.delay(job.pk))
    return job


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            raise ConflictError(f"Job {job.pk} has already {job.status}.")
        if job.status == JobStatus.QUEUED:
            _transition(job, JobStatus.CANCELLED)
        else:
            # The worker checks this flag before each step and stops cleanly.
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


def _transition(job: TrainingJob, target: JobStatus, **changes: Any) -> None:
    check_transition(
        kind="training job", current=job.status, target=target, allowed=JOB_TRANSITIONS
    )
    job.status = target
    now = timezone.now()
    if target == JobStatus.RUNNING:
        job.started_at = now
    elif target != JobStatus.QUEUED:
        job.finished_at = now
    for name, value in changes.items():
        setattr(job, name, value)
    job.save()


def _conversations(version: DatasetVersion, split: Split) -> list[list[dict[str, str]]]:
    return [item.messages for item in version.items.filter(split=split)]


def _record_progress(job: TrainingJob, progress: TrainingProgress) -> None:
    TrainingMetric.objects.create(
        job=job,
        step=progress.step,
        epoch=progress.epoch,
        train_loss=progress.train_loss,
        val_loss=progress.val_loss,
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        step=progress.step, total_steps=progress.total_steps
    )


def _cancel_requested(job_id: int) -> bool:
    return TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()


def training_job_run(*, job_id: int) -> TrainingJob:
    """Run a queued job to the end in this process; called by the worker's task."""
    from registry.services import model_version_register_from_job

    from .adapters import fine_tuner_for

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.status != JobStatus.QUEUED:
            logger.info("Job %s is %s; not running it again", job.pk, job.status)
            return job
        _transition(job, JobStatus.RUNNING)
    if job.provider != Provider.LOCAL:
        _transition(job, JobStatus.FAILED, error=f"Provider {job.provider!r} is not available.")
        return job
    output_dir = Path(settings.FTPORTAL_ARTIFACTS_DIR) / "adapters" / f"job-{job.pk}"
    try:
        fine_tuner = fine_tuner_for(job.base_model)
        result = fine_tuner.train(
            train=_conversations(job.dataset_version, Split.TRAIN),
            validation=_conversations(job.dataset_version, Split.VALIDATION),
            config=TrainingConfig(**job.hyperparameters),
            output_dir=output_dir,
            on_progress=lambda progress: _record_progress(job, progress),
            should_stop=lambda: _cancel_requested(job.pk),
        )
    except TrainingCancelled:
        job.refresh_from_db()
        _transition(job, JobStatus.CANCELLED)
        return job
    except (ProviderError, RuntimeError, ValueError, OSError) as exc:
        logger.exception("Training job %s failed", job.pk)
        job.refresh_from_db()
        _transition(job, JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return job
    with transaction.atomic():
        job.refresh_from_db()
        _transition(
            job,
            JobStatus.SUCCEEDED,
            device=result.device,
            adapter_dir=str(result.adapter_dir),
            step=result.steps,
        )
        model_version_register_from_job(job=job, result=result)
    return job
