"""Training searches through the JSON API, without the worker: a search starts with its first
trial queued on the recipe's settings and patience, answers a retry with the same key with the
same search, refuses what it cannot run by the field at fault, lets a reviewer read but not start
one, hides other projects' searches, shows its best trial once its trials ended, and is
cancelled once."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.models import BaseModel, Provider
from datasets.models import Dataset, DatasetVersion
from datasets.services import dataset_version_freeze
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.api.builders import api, token_client
from tests.api.fixtures import lead_client_fixture  # noqa: F401
from tests.datasets.label_data import label_set_dataset
from training.estimates import launch_estimate
from training.models import JobStatus, SearchStatus, TrainingJob, TrainingSearch
from training.recipes import LABEL_SET_RECIPE, job_hyperparameters
from training.searches import DEFAULT_TRIALS, TRIAL_PATIENCE, training_search_advance

pytestmark = pytest.mark.django_db

LABELS = ["billing", "bug", "account", "feature request"]
# Enough for a search to start within a generous budget.
BUDGET = 600


def label_set_version(project: Project, user: User, per_label: int = 10) -> DatasetVersion:
    """A frozen version of a dataset whose answers are one label of LABELS."""
    dataset = Dataset.objects.create(project=project, name=f"intents-{Dataset.objects.count()}")
    label_set_dataset(dataset, dict.fromkeys(LABELS, per_label), random.Random(3))
    return dataset_version_freeze(dataset=dataset, user=user)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return label_set_version(project, lead)


def start(client: APIClient, project: Project, key: str = "", **body: Any) -> Any:
    url = api(project, "training-searches/")
    if key:
        return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    return client.post(url, body, format="json")


def body_for(version: DatasetVersion, base_model: BaseModel, **extra: Any) -> dict[str, Any]:
    return {
        "dataset_version": version.pk,
        "base_model": base_model.key,
        "budget_minutes": BUDGET,
        **extra,
    }


def finish_trial(job: TrainingJob, *, val_accuracy: float, compute_seconds: float) -> None:
    """What the worker leaves behind a trial that trained, without training."""
    TrainingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED,
        val_accuracy=val_accuracy,
        compute_seconds=compute_seconds,
        best_step=4,
        stopped_early=True,
        adapter_dir=f"/artifacts/adapters/job-{job.pk}",
    )


def test_a_search_starts_with_its_first_trial_queued_on_the_recipe_and_once_per_key(
    client: APIClient, project: Project, base_model: BaseModel, version: DatasetVersion
) -> None:
    response = start(client, project, "search-1", **body_for(version, base_model))

    assert response.status_code == 201, response.content
    body = response.json()
    search = TrainingSearch.objects.get(pk=body["id"])
    assert search.status == SearchStatus.RUNNING == body["status"]
    assert len(search.trial_settings) == DEFAULT_TRIALS == len(body["trial_settings"])
    [trial] = TrainingJob.objects.filter(search=search)
    assert trial.status == JobStatus.QUEUED
    settings = trial.hyperparameters
    for name, value in LABEL_SET_RECIPE.defaults.items():
        assert settings[name] == value, name
    assert settings["early_stopping_patience"] == TRIAL_PATIENCE == 2
    assert (body["dataset_version"], body["base_model"]) == (version.pk, base_model.key)
    assert body["budget_minutes"] == BUDGET
    assert body["best_job"] is None and body["best_model_versions"] == []
    assert body["spent_minutes"] == 0
    # Every planned trial is listed: the first started, the others planned around its rate.
    assert [row["number"] for row in body["trials"]] == [1, 2, 3]
    assert [row["job"] for row in body["trials"]] == [trial.pk, None, None]
    assert [row["status"] for row in body["trials"]] == ["queued", "planned", "planned"]
    rate = LABEL_SET_RECIPE.defaults["learning_rate"]
    assert [row["learning_rate"] for row in body["trials"]] == [rate, rate * 2, rate / 2]
    # The trial is an ordinary job that names its search.
    job = client.get(api(project, f"training-jobs/{trial.pk}/")).json()
    assert job["search"] == search.pk
    assert job["val_accuracy"] is None

    again = start(client, project, "search-1", **body_for(version, base_model))

    assert again.status_code == 200, again.content
    assert again.json()["id"] == search.pk
    assert TrainingSearch.objects.count() == 1
    assert TrainingJob.objects.filter(search__isnull=False).count() == 1
    listing = client.get(api(project, "training-searches/")).json()
    assert [s["id"] for s in listing["results"]] == [search.pk]


def test_trial_count_and_shared_settings_shape_the_trials(
    client: APIClient, project: Project, base_model: BaseModel, version: DatasetVersion
) -> None:
    response = start(
        client,
        project,
        **body_for(version, base_model, trial_count=4, hyperparameters={"epochs": 2}),
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert len(body["trial_settings"]) == 4 == len(body["trials"])
    assert body["hyperparameters"]["epochs"] == 2
    # The fourth halves the rank and alpha, so the adapter's scale stays as it was.
    assert body["trial_settings"][3] == {"lora_r": 8, "lora_alpha": 16}
    assert body["trials"][3]["lora_r"] == 8
    trial = TrainingJob.objects.get(search_id=body["id"])
    assert trial.hyperparameters["epochs"] == 2


def test_a_budget_too_small_for_the_first_trial_is_refused_naming_it(
    client: APIClient, project: Project, base_model: BaseModel, lead: User
) -> None:
    version = label_set_version(project, lead, per_label=40)
    shared = {"epochs": 50}
    first = job_hyperparameters(
        version, base_model, shared | {"early_stopping_patience": TRIAL_PATIENCE}
    )
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=first)
    assert estimate.time is not None and estimate.time.seconds > 60  # else 1 minute would fit

    response = start(
        client,
        project,
        **body_for(version, base_model, budget_minutes=1, hyperparameters=shared),
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "budget_minutes"
    assert "first trial alone" in error["message"]
    assert not TrainingSearch.objects.exists()
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"trial_count": 5}, "trial_count"),
        ({"trial_count": 1}, "trial_count"),
        ({"budget_minutes": 0}, "budget_minutes"),
        ({"budget_minutes": 24 * 60 + 1}, "budget_minutes"),
    ],
)
def test_out_of_bounds_numbers_are_refused_by_field(
    client: APIClient,
    project: Project,
    base_model: BaseModel,
    version: DatasetVersion,
    extra: dict[str, Any],
    named: str,
) -> None:
    response = start(client, project, **body_for(version, base_model, **extra))

    assert response.status_code == 400, response.content
    assert named in response.json()["error"]["fields"]
    assert not TrainingSearch.objects.exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"trials": [{}, {"epochs": 5}]}, "trials[2].epochs"),
        ({"trials": [{}, {"learning_rate": 5}]}, "trials[2]"),
        ({"trials": [{}]}, "trials"),
        (
            {"trials": [{}, {"lora_r": 4}], "hyperparameters": {"lora_r": 8}},
            "hyperparameters.lora_r",
        ),
    ],
)
def test_what_a_trial_may_not_change_is_refused_naming_it(
    client: APIClient,
    project: Project,
    base_model: BaseModel,
    version: DatasetVersion,
    extra: dict[str, Any],
    named: str,
) -> None:
    response = start(client, project, **body_for(version, base_model, **extra))

    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == named
    assert not TrainingSearch.objects.exists()
    assert not TrainingJob.objects.exists()


def test_given_trials_are_run_as_given(
    client: APIClient, project: Project, base_model: BaseModel, version: DatasetVersion
) -> None:
    trials = [{}, {"learning_rate": 1e-4}]

    response = start(client, project, **body_for(version, base_model, trials=trials))

    assert response.status_code == 201, response.content
    assert response.json()["trial_settings"] == trials
    assert [row["learning_rate"] for row in response.json()["trials"]] == [5e-4, 1e-4]


def test_a_hosted_base_model_is_refused_naming_it(
    client: APIClient, project: Project, version: DatasetVersion
) -> None:
    hosted, _ = BaseModel.objects.get_or_create(
        key="hosted-for-search-test",
        defaults={"display_name": "A hosted model", "provider": Provider.OPENAI},
    )

    response = start(client, project, **body_for(version, hosted))

    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == "base_model"
    assert not TrainingSearch.objects.exists()


def test_a_reviewer_reads_searches_but_cannot_start_or_cancel_one(
    client: APIClient,
    project: Project,
    base_model: BaseModel,
    version: DatasetVersion,
    make_member: Callable[..., User],
) -> None:
    search = start(client, project, **body_for(version, base_model)).json()
    reviewer = token_client(make_member(Role.REVIEWER))

    refused = start(reviewer, project, **body_for(version, base_model))
    cancel = reviewer.post(api(project, f"training-searches/{search['id']}/cancel/"))
    listing = reviewer.get(api(project, "training-searches/"))
    detail = reviewer.get(api(project, f"training-searches/{search['id']}/"))

    assert refused.status_code == 403
    assert cancel.status_code == 403
    assert TrainingSearch.objects.count() == 1
    assert not TrainingSearch.objects.get().cancel_requested
    assert listing.status_code == 200
    assert [s["id"] for s in listing.json()["results"]] == [search["id"]]
    assert detail.status_code == 200
    assert detail.json() == search


def test_another_projects_search_is_not_found(
    client: APIClient, project: Project, base_model: BaseModel, lead: User
) -> None:
    elsewhere = Project.objects.create(name="Elsewhere")
    other = TrainingSearch.objects.create(
        project=elsewhere,
        dataset_version=label_set_version(elsewhere, lead),
        base_model=base_model,
        model_name="other",
        budget_minutes=30,
        trial_settings=[{}, {"learning_rate": 1e-4}],
        created_by=lead,
    )

    detail = client.get(api(project, f"training-searches/{other.pk}/"))
    cancel = client.post(api(project, f"training-searches/{other.pk}/cancel/"))
    listing = client.get(api(project, "training-searches/"))

    assert detail.status_code == 404
    assert cancel.status_code == 404
    assert listing.json()["results"] == []
    assert not TrainingSearch.objects.get(pk=other.pk).cancel_requested


def test_a_search_is_cancelled_once_its_queued_trial_is(
    client: APIClient, project: Project, base_model: BaseModel, version: DatasetVersion
) -> None:
    search = start(client, project, **body_for(version, base_model)).json()
    url = api(project, f"training-searches/{search['id']}/cancel/")

    cancelled = client.post(url)

    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["cancel_requested"] is True
    assert cancelled.json()["trials"][0]["status"] == "cancelled"
    trial = TrainingJob.objects.get(search_id=search["id"])
    assert trial.status == JobStatus.CANCELLED
    # No Celery worker runs here: advance as the cancelled trial's end would.
    training_search_advance(search_id=search["id"])
    detail = client.get(api(project, f"training-searches/{search['id']}/")).json()
    assert detail["status"] == "cancelled"
    assert detail["finished_at"] is not None
    assert detail["best_job"] is None
    assert "Cancelled by request." in detail["outcome"]
    # No further trial started.
    assert [row["status"] for row in detail["trials"]] == ["cancelled", "planned", "planned"]

    again = client.post(url)

    assert again.status_code == 409, again.content
    assert TrainingSearch.objects.get(pk=search["id"]).status == SearchStatus.CANCELLED


def test_an_ended_search_shows_its_best_trial_and_registered_version(
    client: APIClient, project: Project, base_model: BaseModel, version: DatasetVersion
) -> None:
    search = start(client, project, **body_for(version, base_model, trial_count=2)).json()
    first = TrainingJob.objects.get(search_id=search["id"])
    finish_trial(first, val_accuracy=0.5, compute_seconds=90)
    training_search_advance(search_id=search["id"])
    second = TrainingJob.objects.filter(search_id=search["id"]).exclude(pk=first.pk).get()
    finish_trial(second, val_accuracy=0.75, compute_seconds=60)
    training_search_advance(search_id=search["id"])

    detail = client.get(api(project, f"training-searches/{search['id']}/")).json()

    assert detail["status"] == "succeeded"
    assert detail["best_job"] == second.pk
    [registered] = ModelVersion.objects.filter(training_job=second)
    assert detail["best_model_versions"] == [registered.pk]
    assert not ModelVersion.objects.filter(training_job=first).exists()
    assert detail["spent_minutes"] == 2.5
    assert [row["is_best"] for row in detail["trials"]] == [False, True]
    assert [row["val_accuracy"] for row in detail["trials"]] == [0.5, 0.75]
    assert [row["minutes"] for row in detail["trials"]] == [1.5, 1.0]
    assert [row["best_step"] for row in detail["trials"]] == [4, 4]
    assert all(row["stopped_early"] for row in detail["trials"])
    assert detail["outcome"].startswith("All 2 trials ran.")
    job = client.get(api(project, f"training-jobs/{second.pk}/")).json()
    assert (job["search"], job["val_accuracy"]) == (search["id"], 0.75)
    # A finished search cannot be cancelled.
    refused = client.post(api(project, f"training-searches/{search['id']}/cancel/"))
    assert refused.status_code == 409
