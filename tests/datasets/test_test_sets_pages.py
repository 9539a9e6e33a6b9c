"""Held-out test sets on the pages and in the API: the freeze form's option, the test set's page
with its overlap per training version (a clear warning, the pairs, hostile input escaped), the
training version's page naming the test sets it shares inputs with, the version lists, checking
again, and the same through the API."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from bench.test_set_overlap import tickets
from datasets.models import DatasetVersion, Split
from datasets.services import dataset_version_freeze
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

from .held_out_sets import HOSTILE, HeldOutWorld, approved_dataset, held_out_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def world(project: Project, lead: User) -> HeldOutWorld:
    return held_out_world(project, lead, train=2000, test=300, exact=12, near=8)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def version_page(client: Client, version: DatasetVersion) -> str:
    response = client.get(reverse("version_detail", args=[version.dataset.project_id, version.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_freeze_form_freezes_a_test_set_when_ticked(project: Project, lead: User) -> None:
    dataset = approved_dataset(project, "held-out", tickets(2000, seed=5))
    client = logged_in(lead)
    form = client.get(reverse("dataset_detail", args=[project.pk, dataset.pk]))
    assert 'name="test_set"' in form.content.decode()
    assert "Held-out test set: never trained on, not split" in page_text(form)
    response = client.post(
        reverse("dataset_freeze", args=[project.pk, dataset.pk]),
        {"validation_fraction": "0.15", "seed": "42", "test_set": "on"},
    )
    version = DatasetVersion.objects.get(dataset=dataset)
    assert response.status_code == 302
    assert response["Location"] == reverse("version_detail", args=[project.pk, version.pk])
    assert version.is_test_set and version.train_count == version.validation_count == 0
    listed = client.get(reverse("dataset_detail", args=[project.pk, dataset.pk]))
    assert "test set not split, never trained on" in page_text_of(listed.content.decode())
    overview = client.get(reverse("project_detail", args=[project.pk]))
    assert f"{version} test set" in page_text_of(overview.content.decode())


def test_without_the_option_the_form_freezes_a_training_version(
    project: Project, lead: User
) -> None:
    dataset = approved_dataset(project, "train", tickets(200, seed=6))
    logged_in(lead).post(
        reverse("dataset_freeze", args=[project.pk, dataset.pk]),
        {"validation_fraction": "0.15", "seed": "42"},
    )
    version = DatasetVersion.objects.get(dataset=dataset)
    assert not version.is_test_set and version.validation_count == 30


def test_the_test_set_page_warns_of_its_overlap_and_lists_the_pairs(
    world: HeldOutWorld, lead: User
) -> None:
    html = version_page(logged_in(lead), world.test_set)
    text = page_text_of(html)
    assert "held-out test set" in text
    assert "Not split: a held-out test set, evaluated whole and never trained on" in text
    assert "20 pair(s) of a training item and a test item share their input" in text
    assert 'id="test-overlap-warning"' in html
    row = row_of(html, world.training)
    assert row == [str(world.training), "12", "8", "20 of 300"]
    assert f'id="test-overlap-pairs-{world.training.pk}"' in html
    assert text.count("exact match") >= 12 and text.count("near-duplicate") >= 8
    # Never offered for training, and no readiness report of a split it does not have.
    assert "launch-slot" not in html and "readiness-slot" not in html
    assert "split=train" not in html


def test_the_training_version_page_names_the_test_sets_it_shares_inputs_with(
    world: HeldOutWorld, lead: User
) -> None:
    html = version_page(logged_in(lead), world.training)
    text = page_text_of(html)
    assert "This version shares inputs with held-out test set(s):" in text
    assert f"{world.test_set} (12 exact, 8 near; 20 test item(s))" in text
    assert "launch-slot" in html


def test_a_clean_test_set_says_so_without_a_warning(project: Project, lead: User) -> None:
    dataset_version_freeze(
        dataset=approved_dataset(project, "train", tickets(2000, seed=1)), user=lead
    )
    clean = dataset_version_freeze(
        dataset=approved_dataset(project, "held-out", tickets(300, seed=9, first_number=10**6)),
        user=lead,
        test_set=True,
    )
    html = version_page(logged_in(lead), clean)
    assert 'id="test-overlap-clean"' in html and 'id="test-overlap-warning"' not in html


def test_shared_hostile_input_is_shown_as_text(
    project: Project, lead: User, world: HeldOutWorld
) -> None:
    # A training version frozen after the test set that repeats its hostile input.
    later = dataset_version_freeze(
        dataset=approved_dataset(
            project, "later", [(HOSTILE, "intent_refund"), *tickets(20, seed=7, first_number=777)]
        ),
        user=lead,
    )
    html = version_page(logged_in(lead), world.test_set)
    assert XSS not in html
    pairs = html[html.index(f'id="test-overlap-pairs-{later.pk}"') :]
    assert XSS_ESCAPED in pairs[: pairs.index("</details>")]


def test_checking_again_is_for_leads(
    world: HeldOutWorld, lead: User, make_member: Callable[..., User]
) -> None:
    url = reverse(
        "test_overlaps_check", args=[world.test_set.dataset.project_id, world.test_set.pk]
    )
    assert logged_in(make_member(Role.REVIEWER)).post(url).status_code == 403
    assert logged_in(lead).get(url).status_code == 405
    response = logged_in(lead).post(url, follow=True)
    assert "Checked" in page_text(response) and "20 shared input pair(s)" in page_text(response)


def test_a_test_set_exports_whole_and_by_its_split(world: HeldOutWorld, lead: User) -> None:
    client = logged_in(lead)
    url = reverse("version_export", args=[world.test_set.dataset.project_id, world.test_set.pk])
    whole = streamed(client.get(url)).splitlines()
    by_split = streamed(client.get(f"{url}?split=test")).splitlines()
    assert len(whole) == len(by_split) == 300
    refused = client.get(f"{url}?split=holdout")
    assert refused.status_code == 400 and "split must be one of" in page_text(refused)


# --- the API ----------------------------------------------------------------------------------


def api(project_id: int, tail: str) -> str:
    return f"/api/projects/{project_id}/{tail}"


def test_the_api_freezes_a_test_set_and_answers_its_overlap(
    project: Project, lead: User, world: HeldOutWorld
) -> None:
    client = token_client(lead)
    dataset = approved_dataset(project, "second held-out", tickets(50, seed=3, first_number=10**7))
    response = client.post(
        api(project.pk, f"datasets/{dataset.pk}/versions/"), {"test_set": True}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["is_test_set"] is True
    assert (body["train_count"], body["validation_count"]) == (0, 0)
    assert [e["version"] for e in body["test_overlaps"]["versions"]] == [world.training.pk]

    detail = client.get(api(project.pk, f"dataset-versions/{world.test_set.pk}/")).json()
    (entry,) = detail["test_overlaps"]["versions"]
    assert (entry["exact"], entry["near"], entry["test_items"]) == (12, 8, 20)
    assert {p["kind"] for p in entry["pairs"]} == {"exact", "near"}
    assert detail["overlapping_test_sets"] == []

    training = client.get(api(project.pk, f"dataset-versions/{world.training.pk}/")).json()
    assert training["is_test_set"] is False and training["test_overlaps"] == {}
    assert training["overlapping_test_sets"] == [
        {
            "test_set": world.test_set.pk,
            "test_set_name": str(world.test_set),
            "exact": 12,
            "near": 8,
            "test_items": 20,
        }
    ]
    listed = client.get(api(project.pk, f"datasets/{world.test_set.dataset_id}/versions/")).json()
    assert [v["is_test_set"] for v in listed["results"]] == [True]
    export = client.get(
        api(project.pk, f"dataset-versions/{world.test_set.pk}/export/"), {"split": Split.TEST}
    )
    assert export.status_code == 200


def test_the_api_checks_a_test_set_again_for_leads_only(
    project: Project, lead: User, world: HeldOutWorld, make_member: Callable[..., User]
) -> None:
    url = api(project.pk, f"dataset-versions/{world.test_set.pk}/test-overlaps/")
    assert token_client(make_member(Role.REVIEWER)).post(url).status_code == 403
    response = token_client(lead).post(url)
    assert response.status_code == 200
    assert response.json()["test_overlaps"]["versions"][0]["exact"] == 12
    not_a_test_set = token_client(lead).post(
        api(project.pk, f"dataset-versions/{world.training.pk}/test-overlaps/")
    )
    assert not_a_test_set.status_code == 400
    assert not_a_test_set.json()["error"]["field"] == "version"


# --- reading the page ---------------------------------------------------------------------------


def streamed(response) -> str:
    return b"".join(response.streaming_content).decode()


def page_text_of(html: str) -> str:
    """What a person reads: the text without tags, entities decoded, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def row_of(html: str, training: DatasetVersion) -> list[str]:
    """The cells of the overlap table's row for one training version, as text."""
    start = html.index(f'<tr data-version="{training.pk}"')
    row = html[start : html.index("</tr>", start)]
    cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
    return [" ".join(re.sub(r"<[^>]+>", "", cell).split()) for cell in cells]
