"""Training recipes: a local job on a label-set version starts from the recipe for short labels,
any other from the general defaults; whatever the lead sets wins, on the form, the API and the
stored job alike."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from ftportal.models import Project
from providers.base import TrainingConfig
from tests.api.builders import api, token_client
from tests.factories import frozen_version, label_set_version
from training.recipes import ALL_LINEAR_LAYERS, GENERAL_RECIPE, LABEL_SET_RECIPE, recipe_for
from training.services import training_job_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(project: Project, lead: User) -> DatasetVersion:
    version = label_set_version(project, lead, count=40)
    return version


def _launched(
    project: Project, lead: User, version: DatasetVersion, base_model: BaseModel, **raw: Any
) -> dict[str, Any]:
    job = training_job_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=lead,
        hyperparameters=raw,
    )
    return dict(job.hyperparameters)


def test_a_label_set_version_trains_with_the_short_label_recipe(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    stored = _launched(project, lead, labelled, base_model)

    assert recipe_for(labelled, base_model) is LABEL_SET_RECIPE
    assert stored["target_modules"] == list(ALL_LINEAR_LAYERS)
    assert (stored["lora_r"], stored["lora_alpha"]) == (16, 32)
    assert stored["learning_rate"] == LABEL_SET_RECIPE.defaults["learning_rate"]
    # What the recipe leaves alone keeps the provider's default.
    assert stored["batch_size"] == TrainingConfig().batch_size


def test_what_the_lead_sets_wins_over_the_recipe(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    stored = _launched(
        project, lead, labelled, base_model, lora_r="4", learning_rate=0.002, target_modules=""
    )

    assert stored["lora_r"] == 4
    assert stored["learning_rate"] == 0.002
    # An empty field is not a setting: the recipe's modules stay.
    assert stored["target_modules"] == list(ALL_LINEAR_LAYERS)


def test_a_version_without_labels_keeps_the_general_defaults(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = frozen_version(project, lead, count=40)

    stored = _launched(project, lead, version, base_model)

    assert recipe_for(version, base_model) is GENERAL_RECIPE
    general = asdict(TrainingConfig())
    for name in ("target_modules", "lora_r", "lora_alpha", "learning_rate", "epochs"):
        expected = general[name]
        assert stored[name] == (list(expected) if isinstance(expected, tuple) else expected)


def test_the_launch_form_shows_the_recipe_and_its_defaults(
    client: Client, project: Project, lead: User, labelled: DatasetVersion
) -> None:
    client.force_login(lead)

    page = client.get(reverse("job_launch", args=[project.pk, labelled.pk])).content.decode()

    assert "the short labels recipe" in page
    assert 'name="lora_r" value="16"' in page
    assert f'name="target_modules" value="{", ".join(ALL_LINEAR_LAYERS)}"' in page


def test_the_api_launch_and_estimate_read_the_recipe(
    project: Project, lead: User, labelled: DatasetVersion, base_model: BaseModel
) -> None:
    client = token_client(lead)
    body = {"dataset_version": labelled.pk, "base_model": base_model.key, "hyperparameters": {}}

    estimate = client.post(api(project, "training-jobs/estimate/"), body, format="json")
    created = client.post(api(project, "training-jobs/"), body, format="json")
    general = client.post(
        api(project, "training-jobs/estimate/"),
        body | {"dataset_version": frozen_version(project, lead, count=40).pk},
        format="json",
    )

    assert created.status_code == 201, created.content
    assert created.json()["hyperparameters"]["lora_r"] == 16
    assert estimate.status_code == general.status_code == 200, estimate.content
    assert estimate.json()["recipe"]["key"] == "label_set"
    assert estimate.json()["recipe"]["defaults"]["lora_r"] == 16
    assert general.json()["recipe"]["key"] == "general"
