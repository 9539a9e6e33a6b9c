"""The loop through a real Celery worker on Redis, with real (tiny) training and generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.models import EvalStatus
from evaluation.services import checkpoint_sweep_create, eval_run_for_version
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.conftest import wait_until
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob
from training.services import training_job_cancel, training_job_create

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
TRAINING_TIMEOUT_S = 300


def refreshed(job: TrainingJob) -> TrainingJob:
    job.refresh_from_db()
    return job


def test_a_job_trains_registers_a_version_and_evaluates_against_the_base(
    celery_worker_process, project, make_member, base_model
):
    lead = make_member(Role.ML_LEAD)
    data = frozen_version(project, lead)
    job = training_job_create(
        project=project,
        dataset_version=data,
        base_model=base_model,
        user=lead,
        hyperparameters={
            "max_steps": 3,
            "eval_every_steps": 2,
            "checkpoint_every_steps": 2,
            "batch_size": 4,
        },
        model_name="triage",
    )
    wait_until(lambda: refreshed(job).is_finished, timeout=TRAINING_TIMEOUT_S, what="training")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert list(job.metrics.values_list("step", flat=True)) == [1, 2, 3]
    assert job.metrics.filter(val_loss__isnull=False).exists()
    assert job.device

    version = ModelVersion.objects.get(training_job=job)
    assert version.dataset_hash == data.content_hash
    assert version.hyperparameters["max_steps"] == 3
    assert (Path(version.adapter_dir) / "adapter_config.json").exists()

    run = eval_run_for_version(project=project, model_version=version, user=lead, max_new_tokens=16)
    wait_until(
        lambda: run.refresh_from_db() or run.status in (EvalStatus.SUCCEEDED, EvalStatus.FAILED),
        timeout=TRAINING_TIMEOUT_S,
        what="evaluation",
    )
    assert run.status == EvalStatus.SUCCEEDED, run.error
    fine_tuned, base, five_shot = run.candidates.all()
    assert fine_tuned.model_version == version and base.model_version is None
    assert (five_shot.prompting, five_shot.few_shot_k) == ("few_shot", 5)
    for candidate in (fine_tuned, base, five_shot):
        assert candidate.example_count == data.validation_count
        assert candidate.results.count() == data.validation_count
        assert 0.0 <= candidate.metrics["means"]["token_f1"] <= 1.0
    assert {(c["a"], c["b"]) for c in run.report["comparisons"]} == {
        (fine_tuned.pk, base.pk),
        (fine_tuned.pk, five_shot.pk),
    }

    # Every checkpoint of the job, on the worker, with a recommendation by the task metric.
    sweep = checkpoint_sweep_create(job=job, user=lead, max_new_tokens=16)
    wait_until(
        lambda: (
            sweep.refresh_from_db() or sweep.status in (EvalStatus.SUCCEEDED, EvalStatus.FAILED)
        ),
        timeout=TRAINING_TIMEOUT_S,
        what="checkpoint evaluation",
    )
    assert sweep.status == EvalStatus.SUCCEEDED, sweep.error
    steps = sorted(job.checkpoints.values_list("step", flat=True))
    assert steps == [2, 3]
    assert [c.checkpoint.step for c in sweep.candidates.all()] == steps
    assert all(c.results.count() == data.validation_count for c in sweep.candidates.all())
    assert sweep.report["recommendation"]["step"] in steps


def test_cancelling_a_running_job_stops_it_between_steps(
    celery_worker_process, project, make_member, base_model
):
    lead = make_member(Role.ML_LEAD)
    data = frozen_version(project, lead)
    job = training_job_create(
        project=project,
        dataset_version=data,
        base_model=base_model,
        user=lead,
        hyperparameters={"epochs": 20, "batch_size": 1},
    )
    wait_until(lambda: refreshed(job).step >= 1, timeout=TRAINING_TIMEOUT_S, what="first step")
    training_job_cancel(job=job)
    wait_until(lambda: refreshed(job).is_finished, timeout=60, what="cancellation")
    assert job.status == JobStatus.CANCELLED
    assert job.step < job.total_steps
    assert not ModelVersion.objects.filter(training_job=job).exists()
