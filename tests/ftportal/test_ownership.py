"""The one mechanism for worker-owned rows (ftportal/ownership.py), seen through a training
job: claiming keeps the first start, a row its worker holds locked is never reaped, and a
manual resume gives a fresh set of tries while attempts keeps growing."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import transaction
from django.utils import timezone

from ftportal import ownership
from ftportal.heartbeat import worker_name
from ftportal.roles import Role
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob
from training.reaper import abandoned_jobs_reap


def _job(project, base_model, lead, **fields) -> TrainingJob:
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 3},
        model_name="triage",
        created_by=lead,
        **fields,
    )


def _ago(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


@pytest.mark.django_db
def test_a_claim_names_this_worker_and_keeps_the_first_start(project, base_model, make_member):
    first_start = _ago(3600)
    job = _job(project, base_model, make_member(Role.ML_LEAD), attempts=1, started_at=first_start)
    assert ownership.attempt_claim(job) == 2
    assert job.worker == worker_name()
    assert job.started_at == first_start and job.heartbeat_at is not None

    job.resumed_after_attempts = 0
    ownership.attempts_renew(job)
    assert (job.resumed_after_attempts, job.attempts, job.heartbeat_at) == (2, 2, None)
    assert ownership.attempts_since_resume(job) == 0


@pytest.mark.django_db(transaction=True)
def test_a_silent_row_its_worker_holds_locked_is_not_reaped(
    project, base_model, make_member, settings, unsent_tasks: list[str]
):
    settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS = 60
    job = _job(
        project,
        base_model,
        make_member(Role.ML_LEAD),
        status=JobStatus.RUNNING,
        attempts=1,
        heartbeat_at=_ago(600),
    )
    locked, release = threading.Event(), threading.Event()

    def worker_writing() -> None:
        from django.db import connection

        try:
            with transaction.atomic():
                TrainingJob.objects.select_for_update().get(pk=job.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=worker_writing)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        assert abandoned_jobs_reap() == []  # skipped, not waited for
    finally:
        release.set()
        thread.join(timeout=30)
    assert abandoned_jobs_reap() == [job.pk]
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.heartbeat_at is None
    assert unsent_tasks == ["training.tasks.run_training_job"]  # queued again, once
