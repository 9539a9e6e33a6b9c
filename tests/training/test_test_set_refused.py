"""A held-out test set is never trained on: the launch (service, form and API) refuses it naming
the field, the launch form is not offered for it, the local and hosted runners refuse a job that
reached them anyway, and a retraining proposal never picks one."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion
from datasets.services import dataset_version_freeze
from ftportal.errors import ApplicationError
from ftportal.models import IdempotencyKey, Project
from ftportal.roles import Role
from monitoring.retrain_prefill import proposed_dataset_version
from tests.api.builders import register_model_version, token_client
from tests.datasets.held_out_sets import HeldOutWorld, held_out_world
from training.hosted import training_job_submit
from training.models import JobStatus, TrainingJob
from training.runner import training_job_run
from training.services import training_job_launch

pytestmark = pytest.mark.django_db

REFUSAL = "is a held-out test set: it is never trained on"


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def world(project: Project, lead: User) -> HeldOutWorld:
    return held_out_world(project, lead, train=2000, test=250, exact=4, near=3)


def text_of(response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_the_launch_refuses_a_test_set_naming_the_field(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    with pytest.raises(ApplicationError) as refused:
        training_job_launch(
            project=project,
            dataset_version=world.test_set,
            base_model=base_model,
            user=lead,
            idempotency_key="first-try",
        )
    assert refused.value.extra == {"field": "dataset_version"}
    assert f"{world.test_set} {REFUSAL}" in refused.value.message
    assert not TrainingJob.objects.exists()
    # The refusal keeps no launch key: the same key then starts a job on a training version.
    assert not IdempotencyKey.objects.exists()
    launched = training_job_launch(
        project=project,
        dataset_version=world.training,
        base_model=base_model,
        user=lead,
        idempotency_key="first-try",
    )
    assert launched.created and launched.obj.dataset_version == world.training


def test_the_api_answers_400_naming_the_field(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    response = token_client(lead).post(
        f"/api/projects/{project.pk}/training-jobs/",
        {"dataset_version": world.test_set.pk, "base_model": base_model.key},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "dataset_version" and REFUSAL in error["message"]
    assert not TrainingJob.objects.exists()


def test_the_launch_form_is_not_offered_and_its_post_is_refused(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    client = Client()
    client.force_login(lead)
    args = [project.pk, world.test_set.pk]
    form = client.get(reverse("job_launch", args=args))
    assert form.status_code == 400 and REFUSAL in text_of(form)
    assert 'id="train-form"' not in form.content.decode()
    estimate = client.get(reverse("job_estimate", args=args), {"base_model": base_model.key})
    assert estimate.status_code == 400
    posted = client.post(
        reverse("job_create", args=args),
        {"base_model": base_model.key, "idempotency_key": "b3f1c2d0-0000-4000-8000-000000000001"},
    )
    assert posted.status_code == 400 and REFUSAL in text_of(posted)
    assert not TrainingJob.objects.exists()
    # The version page offers no launch for the test set, and still does for training data.
    page = client.get(reverse("version_detail", args=args)).content.decode()
    assert reverse("job_launch", args=args) not in page
    training_page = client.get(reverse("version_detail", args=[project.pk, world.training.pk]))
    assert (
        reverse("job_launch", args=[project.pk, world.training.pk])
        in training_page.content.decode()
    )


def job_on(version: DatasetVersion, base_model: BaseModel, user: User) -> TrainingJob:
    """A job that reached a worker without the launch's check (made directly)."""
    return TrainingJob.objects.create(
        project=version.dataset.project,
        dataset_version=version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1, "max_steps": 2},
        model_name="must-not-train",
        created_by=user,
    )


def test_the_local_runner_refuses_a_test_set_before_training(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    job = job_on(world.test_set, base_model, lead)
    training_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert REFUSAL in job.error
    assert not job.checkpoints.exists() and not job.metrics.exists()


def test_the_hosted_runner_refuses_a_test_set_before_submitting(
    project: Project, lead: User, world: HeldOutWorld
) -> None:
    hosted, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={"display_name": "GPT-4o mini", "provider": Provider.OPENAI, "is_active": True},
    )
    job = job_on(world.test_set, hosted, lead)
    training_job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and REFUSAL in job.error
    assert job.provider_job_id == ""


def test_a_retraining_proposal_never_picks_a_test_set(
    project: Project, lead: User, base_model: BaseModel, world: HeldOutWorld
) -> None:
    served = register_model_version(
        version=world.training, base_model=base_model, user=lead, model_name="tickets"
    )
    # The training dataset's approved examples frozen again, as a test set: its newest version.
    again = dataset_version_freeze(dataset=world.training.dataset, user=lead, test_set=True)
    assert again.number == 2 and again.is_test_set
    assert proposed_dataset_version(served) == world.training
