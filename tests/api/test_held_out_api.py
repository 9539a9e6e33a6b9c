"""The API side of keeping validation held out: a freeze refused with the matching pairs, an
override recorded on the version, the move to training with its warning, each example's origin,
and an evaluation's contamination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus, OriginKind, Split
from datasets.services import dataset_version_freeze, example_derive
from evaluation.models import CandidateKind, EvalSplit
from evaluation.services import CandidateSpec, eval_run_create
from ftportal.models import Project
from ftportal.roles import Role
from tests.factories import approved_examples, chat

from .builders import register_model_version, token_client

pytestmark = pytest.mark.django_db


def api(project: Project, tail: str) -> str:
    return f"/api/projects/{project.pk}/{tail}"


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


def validation_examples(version: DatasetVersion) -> list[Example]:
    ids = version.items.filter(split=Split.VALIDATION).values_list("example_id", flat=True)
    return list(Example.objects.filter(pk__in=ids).order_by("pk"))


def twin_of(example: Example) -> Example:
    return Example.objects.create(
        dataset=example.dataset,
        messages=chat(example.messages[1]["content"], "account", "low"),
        status=ExampleStatus.APPROVED,
    )


def test_a_freeze_with_shared_inputs_is_a_400_listing_the_pairs_until_overridden(
    project: Project, lead: User, dataset: Dataset
) -> None:
    approved_examples(dataset, 10)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    held_out = validation_examples(v1)[0]
    twin = twin_of(held_out)
    client = token_client(lead)
    url = api(project, f"datasets/{dataset.pk}/versions/")

    refused = client.post(url, {"validation_fraction": 0.2}, format="json")
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert error["field"] == "overlap_override_reason"
    assert error["overlap_count"] == 1
    [pair] = error["overlaps"]
    assert pair["train_example"] == twin.pk
    assert pair["validation_example"] == held_out.pk
    assert (pair["kind"], pair["kind_label"], pair["similarity"]) == ("exact", "exact match", 1.0)
    assert pair["train_input"] == held_out.messages[1]["content"]
    assert dataset.versions.count() == 1

    frozen = client.post(
        url,
        {"validation_fraction": 0.2, "overlap_override_reason": "same text, other customer"},
        format="json",
    )
    assert frozen.status_code == 201, frozen.content
    body = frozen.json()
    assert body["overlap_override_reason"] == "same text, other customer"
    assert body["overlap_count"] == 1
    assert [p["train_example"] for p in body["overlap_pairs"]] == [twin.pk]
    version = client.get(api(project, f"dataset-versions/{body['id']}/")).json()
    assert version["overlap_override_reason"] == "same text, other customer"


def test_an_override_reason_over_1000_characters_is_refused_by_name(
    project: Project, lead: User, dataset: Dataset
) -> None:
    approved_examples(dataset, 10)
    response = token_client(lead).post(
        api(project, f"datasets/{dataset.pk}/versions/"),
        {"overlap_override_reason": "x" * 1001},
        format="json",
    )
    assert response.status_code == 400
    assert "overlap_override_reason" in response.json()["error"]["fields"]


def derived_from_held_out(dataset: Dataset, lead: User) -> tuple[Example, Example]:
    approved_examples(dataset, 40)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    origin = validation_examples(v1)[0]
    copy = example_derive(
        origin=origin,
        messages=chat(origin.messages[1]["content"], "bug", "low"),
        origin_kind=OriginKind.EVALUATION_FAILURE,
    )
    return origin, copy


def test_an_example_says_what_it_was_made_from(
    project: Project, lead: User, dataset: Dataset
) -> None:
    origin, copy = derived_from_held_out(dataset, lead)
    body = token_client(lead).get(api(project, f"examples/{copy.pk}/")).json()
    assert (body["derived_from"], body["origin_kind"]) == (origin.pk, "evaluation_failure")
    plain = token_client(lead).get(api(project, f"examples/{origin.pk}/")).json()
    assert (plain["derived_from"], plain["origin_kind"]) == (None, "")


def test_moving_to_training_answers_with_how_much_the_evaluation_set_shrinks(
    project: Project, lead: User, dataset: Dataset
) -> None:
    origin, copy = derived_from_held_out(dataset, lead)
    client = token_client(lead)
    url = api(project, f"examples/{copy.pk}/move-to-training/")
    response = client.post(url, {"reason": "the copy has the better label"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["example"], body["origin"], body["retired_by"]) == (
        copy.pk,
        origin.pk,
        lead.username,
    )
    assert (body["validation_before"], body["validation_after"]) == (8, 7)
    assert "shrinks from 8 to 7 items" in body["warning"]
    again = client.post(url, {}, format="json")
    assert again.status_code == 409
    not_derived = client.post(
        api(project, f"examples/{origin.pk}/move-to-training/"), {}, format="json"
    )
    assert not_derived.status_code == 400
    assert "not made from another example" in not_derived.json()["error"]["message"]


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.REVIEWER, 403), (Role.MANAGER, 403), (Role.ML_LEAD, 201), (Role.ADMIN, 201)],
)
def test_only_leads_and_admins_may_move_an_example_to_training(
    project: Project,
    lead: User,
    dataset: Dataset,
    make_member: Callable[..., User],
    role: Role,
    expected: int,
) -> None:
    _, copy = derived_from_held_out(dataset, lead)
    response = token_client(make_member(role)).post(
        api(project, f"examples/{copy.pk}/move-to-training/"), {}, format="json"
    )
    assert response.status_code == expected, response.content


def test_a_non_member_cannot_move_an_example(
    project: Project, lead: User, dataset: Dataset
) -> None:
    _, copy = derived_from_held_out(dataset, lead)
    outsider = User.objects.create_user("outsider", password="pw")
    response = token_client(outsider).post(
        api(project, f"examples/{copy.pk}/move-to-training/"), {}, format="json"
    )
    assert response.status_code == 404


def test_the_evaluation_api_reports_contamination_per_training_version(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    training = Dataset.objects.create(project=project, name="training data")
    approved_examples(training, 20)
    trained_on = dataset_version_freeze(dataset=training, user=lead, validation_fraction=0.2)
    tuned = register_model_version(
        version=trained_on, base_model=base_model, user=lead, model_name="triage"
    )
    train_items = list(trained_on.items.filter(split=Split.TRAIN).order_by("position")[:2])
    held_out = Dataset.objects.create(project=project, name="held out")
    for item in train_items:
        Example.objects.create(
            dataset=held_out, messages=item.messages, status=ExampleStatus.APPROVED
        )
    for n in range(4):
        Example.objects.create(
            dataset=held_out,
            messages=chat(f"A question nobody asked in training, number {n}", "bug", "low"),
            status=ExampleStatus.APPROVED,
        )
    test_version = dataset_version_freeze(dataset=held_out, user=lead, validation_fraction=0.2)
    run = eval_run_create(
        project=project,
        dataset_version=test_version,
        split=EvalSplit.ALL,
        candidates=[
            CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned),
            CandidateSpec(kind=CandidateKind.BASE, base_model=base_model),
        ],
        user=lead,
    )

    body: dict[str, Any] = token_client(lead).get(api(project, f"evaluations/{run.pk}/")).json()
    [found] = body["contamination"]
    assert found["training_version"] == trained_on.pk
    assert (found["item_count"], found["test_count"], found["pair_count"]) == (2, 6, 2)
    assert found["candidates"] == [str(run.candidates.get(position=0).label)]
    assert {p["training_example"] for p in found["pairs"]} == {i.example_id for i in train_items}
    assert {p["kind"] for p in found["pairs"]} == {"exact"}
    # The list stays cheap: it does not compare test sets with training data.
    listing = token_client(lead).get(api(project, "evaluations/")).json()
    assert "contamination" not in listing["results"][0]
