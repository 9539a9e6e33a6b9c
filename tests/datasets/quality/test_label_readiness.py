"""Readiness per label: under a label-set contract the report counts each label's training and
validation examples, names the labels under the threshold, those with one example and those
missing from a side of the split, and its verdict is never "fine" while any of them is; the
version page and the API show the same."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, DatasetVersion
from datasets.quality.services import dataset_version_readiness
from datasets.quality.stats import MIN_TRAINING_EXAMPLES_PER_LABEL, readiness_band
from datasets.services import dataset_contract_set, dataset_version_freeze
from ftportal.models import Project
from ftportal.roles import Role

from ...api.builders import token_client
from ..label_data import label_names, label_set_dataset, labelled_examples

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def lead(make_member) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="intents")


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_sixty_labels_of_eight_or_nine_training_examples_are_insufficient_whatever_the_total(
    dataset, lead
):
    labels = label_names(60, random.Random(1))
    label_set_dataset(dataset, dict.fromkeys(labels, 10), random.Random(1))
    version = dataset_version_freeze(dataset=dataset, user=lead)
    assert version.train_count > 500
    assert readiness_band(version.example_count)["band"] == "fine"  # by the total alone

    report = dataset_version_readiness(version=version)

    per_label = report["per_label"]
    assert report["band"] == "insufficient"
    assert report["label"] == "insufficient data per label"
    assert "60 of 60 labels have fewer than 10 training examples" in report["advice"]
    assert per_label["labels"] == 60
    assert per_label["mean_training_examples"] == round(version.train_count / 60, 1)
    assert 8 <= per_label["mean_training_examples"] < MIN_TRAINING_EXAMPLES_PER_LABEL
    assert {row["label"] for row in per_label["below_threshold"]} == set(labels)
    assert all(row["train"] + row["validation"] == 10 for row in per_label["counts"])
    counts = [row["train"] for row in per_label["counts"]]
    assert counts == sorted(counts)  # fewest training examples first


def test_labels_with_enough_examples_on_both_sides_keep_the_band_of_the_total(dataset, lead):
    label_set_dataset(
        dataset, dict.fromkeys(label_names(40, random.Random(2)), 14), random.Random(2)
    )
    version = dataset_version_freeze(dataset=dataset, user=lead)
    report = dataset_version_readiness(version=version)
    assert report["per_label"]["below_threshold"] == []
    assert report["band"] == "fine" and report["label"] == "more than the recommended start"


def test_labels_missing_from_validation_make_the_split_incomplete(dataset, lead):
    # Frozen first without a contract (the plain draw), then carried over under a label set:
    # the labels the plain draw left out of validation stay out, with nothing new to place.
    rng = random.Random(3)
    counts = dict.fromkeys(label_names(20, rng), 16)
    labelled_examples(dataset, counts, rng)
    dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)
    dataset_contract_set(dataset=dataset, contract={"kind": "label_set", "labels": list(counts)})
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)

    report = dataset_version_readiness(version=version)

    missing = report["per_label"]["without_validation"]
    assert missing and report["per_label"]["below_threshold"] == []
    assert report["band"] == "incomplete_split"
    assert f"{len(missing)} labels have no validation example" in report["advice"]
    assert "freeze with re-split" in report["advice"]


def test_a_report_stored_before_labels_were_counted_is_computed_again(dataset, lead):
    label_set_dataset(dataset, dict.fromkeys(label_names(5, random.Random(4)), 3), random.Random(4))
    version = dataset_version_freeze(dataset=dataset, user=lead)
    report = dataset_version_readiness(version=version)
    old = {key: value for key, value in report.items() if key != "per_label"}
    DatasetVersion.objects.filter(pk=version.pk).update(readiness={**old, "band": "fine"})
    version.refresh_from_db()
    again = dataset_version_readiness(version=version)
    assert again["per_label"]["labels"] == 5 and again["band"] == "insufficient"


def test_the_readiness_section_lists_the_labels_under_the_threshold_as_text(project, dataset, lead):
    rng = random.Random(5)
    labels = label_names(14, rng)  # the odd labels, markup among them
    label_set_dataset(dataset, {**dict.fromkeys(labels, 12), "a label seen once": 1}, rng)
    version = dataset_version_freeze(dataset=dataset, user=lead)
    reader = browser(lead)
    url = reverse("version_readiness", args=[project.pk, version.pk])

    section = reader.get(url, **HTMX).content.decode()

    assert 'id="readiness-labels"' in section
    assert "insufficient data per label" in section
    assert 'id="labels-single-example"' in section and "a label seen once" in section
    assert "&lt;b&gt;card&lt;/b&gt; &amp; &quot;lost&quot;" in section
    assert "<b>card</b>" not in section
    assert section.count('class="below-threshold"') == len(
        version.readiness["per_label"]["below_threshold"]
    )


def test_the_version_page_and_api_name_the_labels_kept_in_training(
    project, dataset, lead, make_member
):
    rng = random.Random(6)
    counts = {**dict.fromkeys(label_names(10, rng), 6), "only once": 1, "<i>also once</i>": 1}
    label_set_dataset(dataset, counts, rng)
    version = dataset_version_freeze(dataset=dataset, user=lead)

    page = browser(make_member(Role.MANAGER)).get(
        reverse("version_detail", args=[project.pk, version.pk])
    )
    html = page.content.decode()
    assert 'id="version-single-example-labels"' in html
    assert "2 with a single example, kept in training" in html
    assert "<code>only once</code>" in html and "<code>&lt;i&gt;also once&lt;/i&gt;</code>" in html

    answer = token_client(make_member(Role.REVIEWER)).get(
        f"/api/projects/{project.pk}/dataset-versions/{version.pk}/"
    )
    assert answer.status_code == 200
    assert sorted(answer.json()["per_label"]["single_example"]) == ["<i>also once</i>", "only once"]
    readiness = token_client(make_member(Role.REVIEWER)).get(
        f"/api/projects/{project.pk}/dataset-versions/{version.pk}/readiness/"
    )
    assert readiness.json()["band"] == "insufficient"
    assert readiness.json()["per_label"]["labels"] == 12
