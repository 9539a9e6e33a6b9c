"""Training through the JSON API, without the worker: a job is queued with validated
hyperparameters, its detail carries its loss curve and names no server path, the estimate answers
before launch, a checkpoint registers once and a queued job is cancelled once."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from catalog.models import BaseModel
from ftportal.models import Project
from registry.models import ModelVersion
from tests.api.builders import World, api, frozen_version
from tests.api.fixtures import api_world_fixture, lead_client_fixture  # noqa: F401
from training.models import Checkpoint, JobStatus, TrainingJob, TrainingMetric

pytestmark = pytest.mark.django_db


def test_a_training_job_is_queued_with_validated_hyperparameters(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"epochs": 4, "learning_rate": "0.0001"},
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    job = response.json()
    assert job["status"] == "queued"
    assert job["hyperparameters"]["epochs"] == 4
    assert job["hyperparameters"]["learning_rate"] == 0.0001
    assert job["model_name"] == "tickets-ft"
    assert job["dataset_version"] == version["id"]
    assert TrainingJob.objects.get(pk=job["id"]).status == JobStatus.QUEUED
    listing = client.get(api(project, "training-jobs/")).json()["results"]
    assert [j["id"] for j in listing] == [job["id"]]


@pytest.mark.parametrize(
    ("hyperparameters", "named"),
    [
        ({"epochs": 0}, "hyperparameters.epochs"),
        ({"epochs": "many"}, "hyperparameters.epochs"),
        ({"warmup": 3}, "warmup"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_field(
    client: APIClient,
    project: Project,
    base_model: BaseModel,
    hyperparameters: dict[str, Any],
    named: str,
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": hyperparameters,
        },
        format="json",
    )

    assert response.status_code == 400
    assert named in response.json()["error"]["message"]
    assert not TrainingJob.objects.exists()


def test_an_unknown_base_model_names_the_field(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)
    response = client.post(
        api(project, "training-jobs/"),
        {"dataset_version": version["id"], "base_model": "gpt-9"},
        format="json",
    )
    assert response.status_code == 400
    assert "base_model" in response.json()["error"]["fields"]


def test_the_job_detail_carries_its_loss_curve(
    client: APIClient, project: Project, world: World
) -> None:
    job = world.queued_job
    TrainingMetric.objects.create(
        job=job, step=1, epoch=0.5, train_loss=2.0, learning_rate=1e-3, tokens_per_second=900.0
    )
    TrainingMetric.objects.create(
        job=job, step=2, epoch=1.0, train_loss=1.5, val_loss=1.7, seconds_left=0.0
    )

    detail = client.get(api(project, f"training-jobs/{job.pk}/")).json()

    empty = {
        "learning_rate": None,
        "tokens_per_second": None,
        "seconds_left": None,
        "val_accuracy": None,
    }
    assert detail["metrics"] == [
        {
            **empty,
            "step": 1,
            "epoch": 0.5,
            "train_loss": 2.0,
            "val_loss": None,
            "learning_rate": 1e-3,
            "tokens_per_second": 900.0,
        },
        {**empty, "step": 2, "epoch": 1.0, "train_loss": 1.5, "val_loss": 1.7, "seconds_left": 0.0},
    ]
    assert [c["step"] for c in detail["checkpoints"]] == [2]  # the world's one checkpoint
    assert detail["overfitting"] is None


def test_the_estimate_answers_before_launch_and_stores_nothing(
    client: APIClient, project: Project, base_model: BaseModel
) -> None:
    version = frozen_version(client, project)

    response = client.post(
        api(project, "training-jobs/estimate/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"epochs": 9},
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    estimate = response.json()
    assert estimate["epochs"] == 9
    assert estimate["training_tokens"] == estimate["tokens_per_epoch"] * 9 > 0
    assert estimate["seconds"] > 0 and estimate["cost_usd"] is not None
    codes = {w["code"] for w in estimate["warnings"]}
    assert {"insufficient_data", "many_epochs"} <= codes
    assert not TrainingJob.objects.exists()
    bad = client.post(
        api(project, "training-jobs/estimate/"),
        {
            "dataset_version": version["id"],
            "base_model": base_model.key,
            "hyperparameters": {"lora_r": 0},
        },
        format="json",
    )
    assert bad.status_code == 400 and "hyperparameters.lora_r" in bad.json()["error"]["message"]


def test_no_answer_names_where_an_adapter_lies_on_the_server(
    client: APIClient, project: Project, world: World
) -> None:
    store = settings.FTPORTAL_ARTIFACTS_DIR
    job = world.queued_job
    job.adapter_dir = str(store / f"adapters/job-{job.pk}")
    job.save()
    Checkpoint.objects.create(
        job=job, step=6, path=str(store / f"adapters/job-{job.pk}/checkpoint-6"), val_loss=0.7
    )
    client.post(api(project, f"training-jobs/{job.pk}/checkpoints/6/register/"))

    detail = client.get(api(project, f"training-jobs/{job.pk}/"))
    models = client.get(api(project, "models/"))

    assert detail.json()["adapter_dir"] == f"adapters/job-{job.pk}"
    assert detail.json()["checkpoints"][-1]["path"] == f"adapters/job-{job.pk}/checkpoint-6"
    newest = models.json()["results"][0]["versions"][0]
    assert (newest["adapter_dir"], newest["checkpoint_step"]) == (
        f"adapters/job-{job.pk}/checkpoint-6",
        6,
    )
    for response in (detail, models):
        assert str(store) not in response.content.decode()


def test_a_checkpoint_registers_as_a_model_version_once_through_the_api(
    client: APIClient, project: Project, world: World
) -> None:
    job = world.queued_job
    Checkpoint.objects.create(job=job, step=4, path="/artifacts/ckpt-4", val_loss=0.8)
    url = api(project, f"training-jobs/{job.pk}/checkpoints/4/register/")

    first = client.post(url)
    again = client.post(url)

    assert first.status_code == 201
    version = ModelVersion.objects.get(pk=first.json()["model_version"])
    assert version.checkpoint is not None
    assert (version.adapter_dir, version.checkpoint.step) == ("/artifacts/ckpt-4", 4)
    assert again.status_code == 409
    detail = client.get(api(project, f"training-jobs/{job.pk}/")).json()
    assert [c["step"] for c in detail["checkpoints"]] == [2, 4]
    assert detail["events"][0]["message"].startswith("Queued by")  # oldest first
    assert any("insufficient data" in e["message"] for e in detail["events"])
    assert version.pk in detail["model_versions"]
    missing = client.post(api(project, f"training-jobs/{job.pk}/checkpoints/99/register/"))
    assert missing.status_code == 404


def test_a_queued_job_is_cancelled_once(client: APIClient, project: Project, world: World) -> None:
    url = api(project, f"training-jobs/{world.queued_job.pk}/cancel/")

    first = client.post(url)
    again = client.post(url)

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert again.status_code == 409
