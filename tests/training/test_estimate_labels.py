"""The launch estimate, the readiness report, the job page and the registry agree with
themselves: max steps ends the estimate where it ends the job, one count of tokens per epoch,
and one way of saying whether early stopping is on."""

from __future__ import annotations

import math
import re

import pytest
from django.test import Client
from django.urls import reverse

from datasets.models import Split
from datasets.quality.services import (
    counter_or_estimate,
    readiness_base_model,
    version_tokens_per_epoch,
)
from datasets.quality.stats import tokens_per_epoch_text
from ftportal.roles import Role
from registry.services import model_version_register
from tests.factories import frozen_version
from training.estimates import launch_estimate
from training.hyperparameters import config_for
from training.models import JobStatus
from training.services import training_job_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member):
    return make_member(Role.ML_LEAD)


@pytest.fixture
def lead_client(lead) -> Client:
    client = Client()
    client.force_login(lead)
    return client


def test_max_steps_ends_the_estimate_where_it_ends_the_job(project, lead, base_model):
    version = frozen_version(project, lead)
    train_count = version.items.filter(split=Split.TRAIN).count()
    every_epoch = config_for(base_model.provider, {"epochs": 3, "batch_size": 2})
    capped = config_for(base_model.provider, {"epochs": 3, "batch_size": 2, "max_steps": 2})

    full = launch_estimate(version=version, base_model=base_model, hyperparameters=every_epoch)
    short = launch_estimate(version=version, base_model=base_model, hyperparameters=capped)

    steps_per_epoch = math.ceil(train_count / 2)
    assert steps_per_epoch * 3 > 2  # so max steps does end this job early
    assert (full.steps, full.capped_by_max_steps) == (steps_per_epoch * 3, False)
    assert full.training_tokens == full.tokens_per_epoch * 3
    assert (short.steps, short.capped_by_max_steps) == (2, True)
    assert short.training_tokens == round(short.tokens_per_epoch * 2 / steps_per_epoch)
    assert short.time is not None and full.time is not None
    # The steps' share: validation passes, saves and loading are counted apart.
    assert short.time.training_seconds == pytest.approx(
        full.time.training_seconds * short.training_tokens / full.training_tokens
    )


def test_max_steps_beyond_the_epochs_changes_nothing(project, lead, base_model):
    version = frozen_version(project, lead)
    stored = config_for(base_model.provider, {"epochs": 2, "max_steps": 100_000})
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
    assert not estimate.capped_by_max_steps
    assert estimate.training_tokens == estimate.tokens_per_epoch * 2


def test_the_launch_page_says_when_max_steps_ends_the_job(project, lead, lead_client, base_model):
    version = frozen_version(project, lead)
    url = reverse("job_estimate", args=[project.pk, version.pk])
    query = {"base_model": base_model.key, "batch_size": "2", "max_steps": "1"}
    html = lead_client.get(url, query).content.decode()
    assert "ended by max steps at step 1" in html


def _number_in(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert match, f"no #{element_id} in the page"
    return match.group(1)


def test_every_page_shows_one_count_of_tokens_per_epoch(project, lead, lead_client):
    """The readiness report, the launch estimate and the job page (its queued event) show the
    training split's tokens, prompt and answer, with the same words."""
    version = frozen_version(project, lead)
    model = readiness_base_model(version.dataset_id)
    assert model is not None
    counter, _ = counter_or_estimate(model)
    per_epoch = version_tokens_per_epoch(version=version, counter=counter)
    everything = version.items.count()
    assert version.items.filter(split=Split.VALIDATION).count() > 0 < everything
    expected = tokens_per_epoch_text(per_epoch)

    readiness = lead_client.get(reverse("version_readiness", args=[project.pk, version.pk]))
    launch = lead_client.get(
        reverse("job_launch", args=[project.pk, version.pk]), {"base_model": model.key}
    )
    job = training_job_create(project=project, dataset_version=version, base_model=model, user=lead)
    job_page = lead_client.get(reverse("job_detail", args=[project.pk, job.pk]))

    assert _number_in(readiness.content.decode(), "readiness-tokens-per-epoch") == expected
    assert _number_in(launch.content.decode(), "estimate-tokens").startswith(expected + " x ")
    assert expected in job_page.content.decode()


def test_a_stored_readiness_report_of_the_old_count_is_computed_again(project, lead, lead_client):
    version = frozen_version(project, lead)
    version.readiness = {"tokens": {"tokens_per_epoch": 17_600}}  # counted every split
    version.save(update_fields=["readiness"])

    html = lead_client.get(
        reverse("version_readiness", args=[project.pk, version.pk])
    ).content.decode()

    assert "17,600" not in html and "17600" not in html
    version.refresh_from_db()
    assert version.readiness["tokens"]["tokens_per_epoch"] != 17_600


@pytest.mark.parametrize(
    ("patience", "words"),
    [
        ("", "off"),
        ("1", "after 1 evaluation without improvement"),
        ("3", "after 3 evaluations without improvement"),
    ],
)
def test_early_stopping_reads_the_same_on_every_page(
    project, lead, lead_client, base_model, patience, words
):
    version = frozen_version(project, lead)
    raw = {"early_stopping_patience": patience} if patience else {}

    launch = lead_client.get(
        reverse("job_launch", args=[project.pk, version.pk]),
        {"base_model": base_model.key, **raw},
    ).content.decode()
    job = training_job_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=lead,
        hyperparameters=raw,
    )
    job.status = JobStatus.SUCCEEDED
    job.save(update_fields=["status"])
    model_version_register(job=job, checkpoint=None, adapter_dir="/final")
    job_page = lead_client.get(reverse("job_detail", args=[project.pk, job.pk])).content.decode()
    registry = lead_client.get(f"/projects/{project.pk}/models/").content.decode()

    assert f"early stopping: {words}" in launch
    assert f"Early stopping: {words}" in job_page
    assert f"Early stopping: {words}" in registry
    for page in (launch, job_page, registry):
        assert "early_stopping_patience=" not in page
        assert "None" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)
    if not patience:  # the empty field's placeholder says the same
        assert re.search(r'name="early_stopping_patience" value="" placeholder="off"', launch)
