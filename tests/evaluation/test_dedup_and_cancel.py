"""Evaluation launches are deduplicated (an identical request while a matching run is queued or
running gets that run), honour the Idempotency-Key header, and can be cancelled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from evaluation.models import CandidateKind, EvalResult, EvalRun, EvalSplit, EvalStatus
from evaluation.runner import eval_run_execute
from evaluation.services import CandidateSpec, eval_run_cancel, eval_run_create, eval_run_resume
from ftportal.errors import ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from tests.concurrency import at_once
from tests.factories import frozen_version
from training.models import Checkpoint, JobStatus, TrainingJob


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead)


@pytest.fixture
def job(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> TrainingJob:
    """A finished job with three checkpoints to sweep."""
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        provider="local",
        hyperparameters={"epochs": 3},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    for step in (10, 20, 30):
        Checkpoint.objects.create(job=job, step=step, path=f"/tmp/ckpt-{job.pk}-{step}")
    return job


def api_client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def sweep_url(job: TrainingJob) -> str:
    return f"/api/projects/{job.project_id}/training-jobs/{job.pk}/evaluate-checkpoints/"


def base_run(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel, **kw: Any
) -> EvalRun:
    return eval_run_create(
        project=project,
        dataset_version=version,
        candidates=[CandidateSpec(kind=CandidateKind.BASE, base_model=base_model)],
        user=lead,
        **kw,
    )


@pytest.mark.django_db
def test_evaluate_checkpoints_posted_many_times_queues_one_run(
    lead: User, job: TrainingJob
) -> None:
    client = api_client(lead)

    answers = [client.post(sweep_url(job), {}, format="json") for _ in range(6)]

    assert [a.status_code for a in answers] == [201] + [200] * 5
    assert len({a.json()["id"] for a in answers}) == 1
    assert EvalRun.objects.count() == 1
    # A different request is another run.
    other = client.post(sweep_url(job), {"max_new_tokens": 32}, format="json")
    assert other.status_code == 201
    assert EvalRun.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluate_checkpoints_requests_queue_one_run(
    lead: User, job: TrainingJob
) -> None:

    def post() -> tuple[int, int]:
        response = api_client(lead).post(sweep_url(job), {}, format="json")
        return response.status_code, response.json()["id"]

    answers = at_once([post] * 4)

    assert sorted(status for status, _ in answers) == [200, 200, 200, 201]
    assert len({run_id for _, run_id in answers}) == 1
    assert EvalRun.objects.count() == 1


@pytest.mark.django_db
def test_an_identical_request_after_the_run_finished_or_was_cancelled_queues_a_new_one(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    first = base_run(project, lead, version, base_model)
    same = base_run(project, lead, version, base_model)
    assert same.pk == first.pk and same.deduplicated
    assert not first.deduplicated

    eval_run_cancel(run=first, user=lead)
    after_cancel = base_run(project, lead, version, base_model)
    EvalRun.objects.filter(pk=after_cancel.pk).update(status=EvalStatus.SUCCEEDED)
    after_success = base_run(project, lead, version, base_model)

    assert len({first.pk, after_cancel.pk, after_success.pk}) == 3
    assert base_run(project, lead, version, base_model, split=EvalSplit.ALL).pk != after_success.pk


@pytest.mark.django_db
def test_the_evaluate_button_clicked_twice_opens_the_same_run(
    client: Client, lead: User, job: TrainingJob
) -> None:
    client.force_login(lead)
    url = reverse("checkpoint_sweep", args=[job.project_id, job.pk])

    first, second = client.post(url), client.post(url)

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert EvalRun.objects.count() == 1


@pytest.mark.django_db
def test_an_idempotency_key_on_an_evaluation_gets_the_first_run_and_refuses_another_body(
    lead: User, job: TrainingJob, version: DatasetVersion, base_model: BaseModel
) -> None:
    client = api_client(lead)
    url = f"/api/projects/{job.project_id}/evaluations/"
    body = {
        "dataset_version": version.pk,
        "candidates": [{"kind": "base", "base_model": base_model.key}],
    }
    first = client.post(url, body, format="json", headers={"Idempotency-Key": "eval-1"})
    eval_run_cancel(run=EvalRun.objects.get(pk=first.json()["id"]), user=lead)

    # Cancelled, so not deduplicated: only the key makes this answer the first run.
    again = client.post(url, body, format="json", headers={"Idempotency-Key": "eval-1"})
    other = client.post(
        url, {**body, "max_new_tokens": 8}, format="json", headers={"Idempotency-Key": "eval-1"}
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "cancelled"
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"
    assert EvalRun.objects.count() == 1


@pytest.mark.django_db
def test_a_queued_run_cancelled_through_the_api_never_starts(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    run = base_run(project, lead, version, base_model)

    cancelled = api_client(lead).post(f"/api/projects/{project.pk}/evaluations/{run.pk}/cancel/")
    again = api_client(lead).post(f"/api/projects/{project.pk}/evaluations/{run.pk}/cancel/")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert "cannot go from 'cancelled' to 'cancelled'" in again.json()["error"]["message"]
    # A worker that gets the queued message later does nothing with it.
    assert eval_run_execute(run_id=run.pk) is None
    run.refresh_from_db()
    assert (run.status, run.cancelled_by, run.attempts) == (EvalStatus.CANCELLED, lead, 0)
    assert run.finished_at is not None
    assert not EvalResult.objects.filter(candidate__run=run).exists()


@pytest.mark.django_db
def test_a_finished_run_cannot_be_cancelled_and_a_reviewer_may_not_cancel(
    project: Project,
    lead: User,
    make_member: Callable[[Role], User],
    version: DatasetVersion,
    base_model: BaseModel,
) -> None:
    run = base_run(project, lead, version, base_model)
    reviewer = api_client(make_member(Role.REVIEWER))
    url = f"/api/projects/{project.pk}/evaluations/{run.pk}/cancel/"

    forbidden = reviewer.post(url)
    EvalRun.objects.filter(pk=run.pk).update(status=EvalStatus.SUCCEEDED)
    finished = api_client(lead).post(url)

    assert forbidden.status_code == 403
    assert finished.status_code == 409
    run.refresh_from_db()
    assert run.status == EvalStatus.SUCCEEDED


@pytest.mark.django_db
def test_the_run_page_offers_cancel_to_leads_and_says_what_a_cancelled_run_kept(
    client: Client,
    project: Project,
    lead: User,
    make_member: Callable[[Role], User],
    version: DatasetVersion,
    base_model: BaseModel,
) -> None:
    run = base_run(project, lead, version, base_model)
    page_url = reverse("eval_detail", args=[project.pk, run.pk])
    client.force_login(make_member(Role.MANAGER))
    assert 'id="eval-cancel"' not in client.get(page_url).content.decode()
    client.force_login(lead)
    assert 'id="eval-cancel"' in client.get(page_url).content.decode()

    response = client.post(reverse("eval_cancel", args=[project.pk, run.pk]))

    assert response.status_code == 302
    page = client.get(page_url).content.decode()
    assert 'id="eval-cancel"' not in page
    assert 'id="eval-cancelled"' in page
    assert f"Cancelled by {lead.get_username()}" in page
    assert "are not a result" in page


@pytest.mark.django_db
def test_a_failed_run_is_not_resumed_while_an_identical_one_is_active(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    failed = base_run(project, lead, version, base_model)
    EvalRun.objects.filter(pk=failed.pk).update(status=EvalStatus.FAILED)
    active = base_run(project, lead, version, base_model)
    assert active.pk != failed.pk

    with pytest.raises(ConflictError) as refused:
        eval_run_resume(run=failed)

    assert "identical evaluation is queued or running" in refused.value.message
    failed.refresh_from_db()
    assert failed.status == EvalStatus.FAILED
