"""A training launch carries an idempotency key: the page renders a fresh one into its form,
API clients send an Idempotency-Key header. The same key from the same user in the same
project gets the job the first request queued, even when both requests arrive at once."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.idempotency import IDEMPOTENCY_WINDOW
from ftportal.models import IdempotencyKey, Project
from ftportal.roles import Role
from tests.concurrency import at_once
from tests.factories import frozen_version
from training.models import TrainingJob


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead)


def api_client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def launch(
    client: APIClient, version: DatasetVersion, base_model: BaseModel, key: str, **body: Any
) -> Any:
    return client.post(
        f"/api/projects/{version.dataset.project_id}/training-jobs/",
        {"dataset_version": version.pk, "base_model": base_model.key, **body},
        format="json",
        headers={"Idempotency-Key": key},
    )


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_launches_with_one_key_queue_one_job(
    lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    key = str(uuid.uuid4())

    def post() -> tuple[int, int]:
        response = launch(api_client(lead), version, base_model, key)
        return response.status_code, response.json()["id"]

    answers = at_once([post, post])

    assert sorted(status for status, _ in answers) == [200, 201]
    assert len({job_id for _, job_id in answers}) == 1
    assert TrainingJob.objects.count() == 1


@pytest.mark.django_db
def test_a_repeated_key_gets_the_first_job_and_a_new_key_queues_another(
    lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    client = api_client(lead)

    first = launch(client, version, base_model, "retry-me")
    again = launch(client, version, base_model, "retry-me")
    other = launch(client, version, base_model, "another")
    no_key = client.post(
        f"/api/projects/{version.dataset.project_id}/training-jobs/",
        {"dataset_version": version.pk, "base_model": base_model.key},
        format="json",
    )

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    assert no_key.status_code == 201
    assert TrainingJob.objects.count() == 3


@pytest.mark.django_db
def test_a_key_is_per_user_and_refused_for_a_different_request(
    lead: User,
    make_member: Callable[[Role], User],
    version: DatasetVersion,
    base_model: BaseModel,
) -> None:
    first = launch(api_client(lead), version, base_model, "k1")
    other_user = launch(api_client(make_member(Role.ML_LEAD)), version, base_model, "k1")
    changed = launch(api_client(lead), version, base_model, "k1", model_name="other-name")
    bad = launch(api_client(lead), version, base_model, "not\ta key")

    assert (first.status_code, other_user.status_code) == (201, 201)
    assert changed.status_code == 409
    assert changed.json()["error"]["field"] == "Idempotency-Key"
    assert "different request" in changed.json()["error"]["message"]
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "Idempotency-Key"
    assert TrainingJob.objects.count() == 2


@pytest.mark.django_db
def test_a_key_older_than_the_window_starts_a_new_job(
    lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    client = api_client(lead)
    first = launch(client, version, base_model, "daily")
    IdempotencyKey.objects.update(
        created_at=datetime.datetime.now(datetime.UTC) - IDEMPOTENCY_WINDOW - datetime.timedelta(1)
    )

    later = launch(client, version, base_model, "daily")

    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]


@pytest.mark.django_db
def test_the_launch_form_posted_twice_queues_one_job(
    client: Client, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    client.force_login(lead)
    project_id = version.dataset.project_id
    form = client.get(reverse("job_launch", args=[project_id, version.pk])).content.decode()
    found = re.search(r'name="idempotency_key" value="([^"]+)"', form)
    assert found is not None
    again = client.get(reverse("job_launch", args=[project_id, version.pk])).content.decode()
    assert found.group(1) not in again  # each drawing of the form gets a fresh key
    post = {"base_model": base_model.key, "model_name": "m", "idempotency_key": found.group(1)}
    url = reverse("job_create", args=[project_id, version.pk])

    first = client.post(url, post)
    second = client.post(url, post)

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert TrainingJob.objects.count() == 1
