"""The job and evaluation APIs say when a running job's or evaluation's worker has gone silent,
as their pages do (issue 13, item 6): ``worker_silent_seconds`` instead of a stale estimate."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from catalog.models import BaseModel, Provider
from evaluation.models import EvalRun, EvalStatus
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def api(lead: User) -> APIClient:
    return token_client(lead)


def ago(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


def a_job(project: Project, base_model: BaseModel, user: User, **fields: Any) -> TrainingJob:
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, user),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=user,
        **fields,
    )


def job_answer(api: APIClient, job: TrainingJob) -> dict[str, Any]:
    response = api.get(f"/api/projects/{job.project_id}/training-jobs/{job.pk}/")
    assert response.status_code == 200
    return dict(response.json())


def test_a_running_job_whose_worker_fell_silent_has_no_estimate_but_its_silence(
    api: APIClient, project: Project, base_model: BaseModel, lead: User, settings: Any
) -> None:
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    job = a_job(
        project,
        base_model,
        lead,
        status=JobStatus.RUNNING,
        started_at=ago(400),
        heartbeat_at=ago(168),
        seconds_left=63,
    )

    answer = job_answer(api, job)

    assert 168 <= answer["worker_silent_seconds"] < 180
    assert answer["seconds_left"] is None
    listed = api.get(f"/api/projects/{project.pk}/training-jobs/").json()["results"]
    assert [(j["worker_silent_seconds"] is not None, j["seconds_left"]) for j in listed] == [
        (True, None)
    ]

    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
    answer = job_answer(api, job)
    assert (answer["worker_silent_seconds"], answer["seconds_left"]) == (None, 63)


def test_a_hosted_jobs_silence_counts_against_its_polling_interval(
    api: APIClient, project: Project, lead: User, settings: Any
) -> None:
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    settings.FTPORTAL_HOSTED_POLL_STALE_SECONDS = 90
    hosted = BaseModel.objects.create(
        key="gpt-silence-test", display_name="hosted", provider=Provider.OPENAI
    )
    job = a_job(
        project, hosted, lead, status=JobStatus.RUNNING, heartbeat_at=ago(60), seconds_left=300
    )

    answer = job_answer(api, job)
    assert (answer["worker_silent_seconds"], answer["seconds_left"]) == (None, 300)

    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=ago(100))
    answer = job_answer(api, job)
    assert 100 <= answer["worker_silent_seconds"] < 110
    assert answer["seconds_left"] is None


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED])
def test_a_job_no_worker_is_meant_to_be_running_is_never_silent(
    api: APIClient,
    project: Project,
    base_model: BaseModel,
    lead: User,
    settings: Any,
    status: JobStatus,
) -> None:
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    job = a_job(
        project, base_model, lead, status=status, started_at=ago(900), heartbeat_at=ago(600)
    )

    assert job_answer(api, job)["worker_silent_seconds"] is None


def an_evaluation(project: Project, user: User, **fields: Any) -> EvalRun:
    return EvalRun.objects.create(
        project=project, dataset_version=frozen_version(project, user), created_by=user, **fields
    )


def test_a_running_evaluation_whose_worker_fell_silent_says_for_how_long(
    api: APIClient, project: Project, lead: User, settings: Any
) -> None:
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    silent = an_evaluation(
        project, lead, status=EvalStatus.RUNNING, started_at=ago(300), heartbeat_at=ago(95)
    )
    on_time = an_evaluation(
        project, lead, status=EvalStatus.RUNNING, started_at=ago(300), heartbeat_at=ago(5)
    )
    # Started, never beat: counted from its start.
    mute = an_evaluation(project, lead, status=EvalStatus.RUNNING, started_at=ago(50))
    finished = an_evaluation(
        project, lead, status=EvalStatus.SUCCEEDED, started_at=ago(900), heartbeat_at=ago(600)
    )
    queued = an_evaluation(project, lead)

    def silence(run: EvalRun) -> int | None:
        response = api.get(f"/api/projects/{project.pk}/evaluations/{run.pk}/")
        assert response.status_code == 200
        value: int | None = response.json()["worker_silent_seconds"]
        return value

    assert 95 <= (silence(silent) or 0) < 105
    assert 50 <= (silence(mute) or 0) < 60
    assert [silence(run) for run in (on_time, finished, queued)] == [None, None, None]
    listed = api.get(f"/api/projects/{project.pk}/evaluations/").json()["results"]
    assert {run["id"] for run in listed if run["worker_silent_seconds"]} == {silent.pk, mute.pk}


def test_the_schema_documents_the_silence_and_the_estimate_as_nullable() -> None:
    components = SchemaGenerator().get_schema(request=None, public=True)["components"]
    schemas = components["schemas"]
    for name in ("JobOutput", "JobDetailOutput", "EvalRunOutput"):
        field = schemas[name]["properties"]["worker_silent_seconds"]
        assert field["type"] == "integer" and field["nullable"] is True, name
        assert "last heard from" in field["description"], name
    for name in ("JobOutput", "JobDetailOutput"):
        estimate = schemas[name]["properties"]["seconds_left"]
        assert estimate["type"] == "number" and estimate["nullable"] is True
        assert "silent" in estimate["description"]
