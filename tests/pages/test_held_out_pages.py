"""Pages that keep validation held out: the freeze form listing matching pairs and taking an
override, the version page recording it, the review card naming an example's origin, the
move-to-training confirmation with its warning, and the evaluation's contamination warning."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    OriginKind,
    Split,
    ValidationRetirement,
)
from datasets.services import dataset_version_freeze, example_derive
from evaluation.models import CandidateKind, EvalSplit
from evaluation.services import CandidateSpec, eval_run_create
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import register_model_version
from tests.factories import approved_examples, chat
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


def words(response) -> str:
    """What a person reads: tags dropped, entities decoded, white space collapsed."""
    return " ".join(re.sub(r"<[^>]+>", "", page_text(response)).split())


def validation_examples(version: DatasetVersion) -> list[Example]:
    ids = version.items.filter(split=Split.VALIDATION).values_list("example_id", flat=True)
    return list(Example.objects.filter(pk__in=ids).order_by("pk"))


def test_the_freeze_page_lists_shared_inputs_and_freezes_with_a_recorded_reason(
    client: Client, project: Project, lead: User, dataset: Dataset
) -> None:
    approved_examples(dataset, 9)
    marked = Example.objects.create(
        dataset=dataset,
        messages=chat(f"My order {XSS} vanished", "bug", "high"),
        status=ExampleStatus.APPROVED,
    )
    v1 = dataset_version_freeze(dataset=dataset, user=lead, seed=2, validation_fraction=0.2)
    assert marked in validation_examples(v1)
    twin = Example.objects.create(
        dataset=dataset, messages=marked.messages, status=ExampleStatus.APPROVED
    )
    client.force_login(lead)
    url = reverse("dataset_freeze", args=[project.pk, dataset.pk])
    form = {"validation_fraction": "0.2", "seed": "5", "note": "second round"}

    refused = client.post(url, form)
    assert refused.status_code == 400
    text = page_text(refused)
    assert "1 train/validation pair(s) share their input (1 exact, 0 near-duplicate)" in text
    html = refused.content.decode()
    assert 'id="freeze-overlaps"' in html and 'id="overlap-override-reason"' in html
    assert f"#{twin.pk}" in text and f"#{marked.pk}" in text
    assert XSS not in html and XSS_ESCAPED in html
    assert 'value="second round"' in html and 'value="5"' in html  # kept as typed
    assert dataset.versions.count() == 1

    frozen = client.post(url, {**form, "overlap_override_reason": f"known {XSS} twin"})
    v2 = dataset.versions.get(number=2)
    assert frozen.status_code == 302
    assert frozen["Location"] == reverse("version_detail", args=[project.pk, v2.pk])
    page = client.get(frozen["Location"])
    assert 'id="version-overlap-override"' in page.content.decode()
    assert "Frozen with 1 train/validation pair(s) sharing their input" in page_text(page)
    assert XSS not in page.content.decode()


def derived(dataset: Dataset, lead: User) -> tuple[Example, Example, DatasetVersion]:
    approved_examples(dataset, 40)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    origin = validation_examples(v1)[0]
    copy = example_derive(
        origin=origin,
        messages=chat(origin.messages[1]["content"], "bug", "low"),
        origin_kind=OriginKind.EVALUATION_FAILURE,
    )
    return origin, copy, v1


def card(client: Client, project: Project, example: Example):
    url = reverse("review_queue", args=[project.pk, example.dataset_id])
    return client.get(f"{url}?example={example.pk}")


def test_the_review_card_names_the_origin_and_offers_the_lead_the_move(
    client: Client, project: Project, lead: User, dataset: Dataset, make_member
) -> None:
    origin, copy, v1 = derived(dataset, lead)
    client.force_login(lead)
    response = card(client, project, copy)
    text = words(response)
    assert f"Made from example {origin.pk} (evaluation failure)." in text
    assert f"Its origin is held out in {v1}, so this example is frozen into validation" in text
    assert 'id="move-to-training"' in response.content.decode()

    client.force_login(make_member(Role.REVIEWER))
    response = card(client, project, copy)
    assert f"Made from example {origin.pk} (evaluation failure)." in words(response)
    assert 'id="move-to-training"' not in response.content.decode()
    assert 'id="card-origin"' not in card(client, project, origin).content.decode()


def test_the_move_page_warns_how_much_validation_shrinks_then_records_the_move(
    client: Client, project: Project, lead: User, dataset: Dataset
) -> None:
    origin, copy, _ = derived(dataset, lead)
    client.force_login(lead)
    url = reverse("example_move_to_training", args=[project.pk, copy.pk])
    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "the evaluation set of tickets shrinks from 8 to 7 items" in words(confirm)
    assert not ValidationRetirement.objects.exists()  # a GET changes nothing

    moved = client.post(url, {"reason": "the copy is relabelled"}, follow=True)
    retirement = ValidationRetirement.objects.get()
    assert (retirement.derived, retirement.origin, retirement.reason) == (
        copy,
        origin,
        "the copy is relabelled",
    )
    assert "shrinks from 8 to 7 items" in words(moved)
    assert f"Moved to training by {lead.username}" in words(moved)
    assert client.post(url).status_code == 409


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_only_leads_may_open_or_post_the_move(
    client: Client, project: Project, lead: User, dataset: Dataset, make_member, role: Role
) -> None:
    _, copy, _ = derived(dataset, lead)
    client.force_login(make_member(role))
    url = reverse("example_move_to_training", args=[project.pk, copy.pk])
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    assert not ValidationRetirement.objects.exists()


def test_the_move_page_refuses_an_example_with_no_origin(
    client: Client, project: Project, lead: User, dataset: Dataset
) -> None:
    origin, _, _ = derived(dataset, lead)
    client.force_login(lead)
    response = client.get(reverse("example_move_to_training", args=[project.pk, origin.pk]))
    assert response.status_code == 400
    assert "was not made from another example" in page_text(response)


def test_the_evaluation_page_warns_about_test_items_seen_in_training(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    training = Dataset.objects.create(project=project, name="training data")
    approved_examples(training, 20)
    trained_on = dataset_version_freeze(dataset=training, user=lead, validation_fraction=0.2)
    tuned = register_model_version(
        version=trained_on, base_model=base_model, user=lead, model_name="triage"
    )
    seen = trained_on.items.filter(split=Split.TRAIN).order_by("position")[0]
    held_out = Dataset.objects.create(project=project, name="held out")
    Example.objects.create(dataset=held_out, messages=seen.messages, status=ExampleStatus.APPROVED)
    for n in range(3):
        Example.objects.create(
            dataset=held_out,
            messages=chat(f"Unseen question {XSS} number {n}", "bug", "low"),
            status=ExampleStatus.APPROVED,
        )
    test_version = dataset_version_freeze(dataset=held_out, user=lead, validation_fraction=0.2)
    run = eval_run_create(
        project=project,
        dataset_version=test_version,
        split=EvalSplit.ALL,
        candidates=[CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned)],
        user=lead,
    )
    client.force_login(lead)
    response = client.get(reverse("eval_detail", args=[project.pk, run.pk]))
    text = words(response)
    assert (
        f"Contamination: 1 of 4 test items also appear, exactly or nearly, in the training "
        f"split of {trained_on}" in text
    )
    assert seen.messages[1]["content"] in text

    clean = eval_run_create(
        project=project,
        dataset_version=test_version,
        split=EvalSplit.ALL,
        candidates=[CandidateSpec(kind=CandidateKind.BASE, base_model=base_model)],
        user=lead,
    )
    assert "Contamination" not in page_text(
        client.get(reverse("eval_detail", args=[project.pk, clean.pk]))
    )
