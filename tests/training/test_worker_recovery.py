"""No job stays "running" when its worker dies: a real Celery worker is killed (SIGKILL) in the
middle of a local training job; celery beat's reaper notices the silent heartbeat and requeues
the job, and another worker resumes it from its last checkpoint to the end. And a hosted job
runs through the real worker against the fake OpenAI API."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from catalog.models import BaseModel, EndpointKind, Provider
from costs.models import LedgerEntry
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.conftest import start_celery_worker, stop_celery_worker, wait_until
from tests.factories import fake_endpoint, frozen_version
from training.hyperparameters import config_for
from training.models import JobStatus, TrainingJob
from training.services import training_job_create
from training.tasks import run_training_job

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
# A queue only the worker we kill listens to, so the session's worker cannot take the job.
DOOMED_QUEUE = "recovery-test"
TRAINING_TIMEOUT_S = 300


def refreshed(job: TrainingJob) -> TrainingJob:
    job.refresh_from_db()
    return job


def latest_checkpoint_step(job: TrainingJob) -> int:
    return max(job.checkpoints.values_list("step", flat=True), default=0)


def test_a_killed_worker_is_noticed_and_the_job_resumes_from_its_last_checkpoint(
    project, make_member, base_model, tmp_path: Path
):
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead)
    # Created without the service's dispatch: the first run goes to the doomed worker only.
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        provider=Provider.LOCAL,
        hyperparameters=config_for(
            Provider.LOCAL,
            {"epochs": 4, "batch_size": 2, "checkpoint_every_steps": 2, "eval_every_steps": 4},
        ),
        model_name="triage",
        created_by=lead,
    )
    fast_heartbeat = {"FTPORTAL_HEARTBEAT_SECONDS": "0.5"}
    doomed_log = tmp_path / "doomed.log"
    doomed = start_celery_worker(doomed_log, queues=DOOMED_QUEUE, extra_env=fast_heartbeat)
    try:
        run_training_job.apply_async((job.pk,), queue=DOOMED_QUEUE)
        wait_until(
            lambda: refreshed(job).step > latest_checkpoint_step(job) > 0,
            timeout=TRAINING_TIMEOUT_S,
            what="a checkpoint and a step after it",
        )
        os.kill(doomed.pid, signal.SIGKILL)  # no clean shutdown, no chance to report anything
        doomed.wait(timeout=10)
    finally:
        stop_celery_worker(doomed, doomed_log)
    killed_at = refreshed(job).step
    resume_step = latest_checkpoint_step(job)
    assert job.status == JobStatus.RUNNING and job.attempts == 1

    # A second worker with beat inside: the reaper runs every second and calls a job whose
    # heartbeat is 3 s old abandoned.
    rescuer_log = tmp_path / "rescuer.log"
    rescuer = start_celery_worker(
        rescuer_log,
        queues="default,training",
        private_broker=True,
        extra_args=("-B", f"--schedule={tmp_path / 'beat-schedule'}"),
        extra_env={
            **fast_heartbeat,
            "FTPORTAL_REAPER_SECONDS": "1",
            "FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS": "3",
        },
    )
    try:
        wait_until(
            lambda: refreshed(job).is_finished, timeout=TRAINING_TIMEOUT_S, what="the resumed job"
        )
    finally:
        stop_celery_worker(rescuer, rescuer_log)

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2
    messages = list(job.events.values_list("message", flat=True))
    assert any(
        "stopped responding" in m and f"resume from the checkpoint at step {resume_step}" in m
        for m in messages
    ), messages
    assert f"Resuming from the checkpoint at step {resume_step}" in messages
    # Every step is on the curve exactly once, those after the checkpoint trained again.
    steps = list(job.metrics.order_by("step").values_list("step", flat=True))
    assert steps == list(range(1, job.total_steps + 1))
    assert killed_at < job.total_steps
    assert ModelVersion.objects.filter(training_job=job).count() == 1
    assert job.actual_cost_usd is not None and job.compute_seconds > 0
    # The ledger (costs): the attempt that finished is one row of its worker time; the killed
    # attempt's time died with its worker, unmeasured.
    [spent] = LedgerEntry.objects.filter(training_job=job)
    assert spent.event == f"training_job:{job.pk}:attempt:2"
    assert abs(spent.quantity - Decimal(str(job.compute_seconds))) < Decimal("0.000001")
    rate = Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR))
    assert spent.amount == (spent.quantity * rate / 3600).quantize(Decimal("0.00000001"))


def test_a_hosted_job_runs_through_the_worker_against_the_fake_api(
    celery_worker_process, project, make_member, fake_openai: FakeOpenAIServer
):
    lead = make_member(Role.ML_LEAD)
    hosted, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": fake_endpoint(
                fake_openai.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
            ),
            "is_active": True,
        },
    )
    fake_openai.fail_next_requests(1, status=503)  # the first call fails; the task retries
    job = training_job_create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=hosted,
        user=lead,
        hyperparameters={"epochs": 2},
    )
    wait_until(lambda: refreshed(job).is_finished, timeout=120, what="the hosted job")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert fake_openai.jobs_created == 1
    assert job.actual_cost_usd is not None and job.actual_cost_usd > 0
    assert job.events.filter(message__contains="trying again").exists()
    version = ModelVersion.objects.get(training_job=job)
    assert version.fine_tuned_model == job.fine_tuned_model != ""
