"""Validation stays held out by construction: derived examples follow their origins, moving one
to training retires its origin on purpose, and a freeze refuses train and validation inputs
that match unless the lead says why."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    OriginKind,
    ReviewAction,
    Split,
    ValidationRetirement,
)
from datasets.services import (
    SplitOverlapError,
    dataset_version_freeze,
    example_derive,
    example_move_to_training,
    example_review,
)
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from evaluation.services import eval_results_send_to_review
from ftportal.errors import ApplicationError, ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from tests.factories import approved_examples, chat, frozen_version

pytestmark = pytest.mark.django_db

WRONG = json.dumps({"category": "bug", "priority": "high"})
# A long input, so that changing its last word leaves a near-duplicate (Jaccard ~0.93).
LONG_TICKET = (
    "Since the update last Tuesday every export of the quarterly revenue report to the shared "
    "drive stops halfway and leaves an empty file behind, although the same export from my "
    "laptop at home finishes in a minute without any error message at all"
)


@pytest.fixture
def lead(make_member) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


def sides(version: DatasetVersion) -> dict[int | None, str]:
    return dict(version.items.values_list("example_id", "split"))


def held_out(version: DatasetVersion) -> list[Example]:
    ids = version.items.filter(split=Split.VALIDATION).values_list("example_id", flat=True)
    return list(Example.objects.filter(pk__in=ids).order_by("pk"))


def wrong_answers_for_validation(version: DatasetVersion, lead: User, base: BaseModel) -> EvalRun:
    """A finished run on the version's validation split in which the model got every item
    wrong (what the failure browser shows)."""
    run = EvalRun.objects.create(
        project=version.dataset.project,
        dataset_version=version,
        status=EvalStatus.SUCCEEDED,
        created_by=lead,
    )
    candidate = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base
    )
    for item in version.items.filter(split=Split.VALIDATION):
        EvalResult.objects.create(
            candidate=candidate, item=item, output=WRONG, scores={"exact_match": 0.0}
        )
    return run


def approve(examples: list[Example], user: User) -> None:
    for example in examples:
        example_review(example=example, user=user, action=ReviewAction.APPROVE)


def test_failures_sent_to_review_and_approved_stay_in_validation_at_the_next_freeze(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    v1 = frozen_version(project, lead, count=40)
    run = wrong_answers_for_validation(v1, lead, base_model)
    origins = held_out(v1)
    assert len(origins) == 8

    copies = eval_results_send_to_review(
        run=run, result_ids=list(EvalResult.objects.values_list("pk", flat=True)), user=lead
    )
    assert {(c.derived_from_id, c.origin_kind) for c in copies} == {
        (o.pk, OriginKind.EVALUATION_FAILURE) for o in origins
    }
    approve(copies, lead)
    v2 = dataset_version_freeze(dataset=v1.dataset, user=lead, validation_fraction=0.2)

    after = sides(v2)
    assert {after[c.pk] for c in copies} == {Split.VALIDATION}
    assert {after[o.pk] for o in origins} == {Split.VALIDATION}
    assert v2.validation_count == 16


def test_on_a_fresh_split_a_derived_example_lands_on_its_origins_side(
    dataset: Dataset, lead: User
) -> None:
    originals = approved_examples(dataset, 30)
    copies = [
        example_derive(
            origin=original,
            messages=chat(original.messages[1]["content"], "bug", "low"),
            origin_kind=OriginKind.PRODUCTION_FEEDBACK,
        )
        for original in originals[:10]
    ]
    approve(copies, lead)
    version = dataset_version_freeze(dataset=dataset, user=lead, seed=7, validation_fraction=0.2)
    after = sides(version)
    assert [after[c.pk] for c in copies] == [after[o.pk] for o in originals[:10]]
    assert Split.VALIDATION in [after[o.pk] for o in originals[:10]]


def test_a_copy_of_a_copy_follows_the_first_origin(dataset: Dataset, lead: User) -> None:
    approved_examples(dataset, 20)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    [origin, *_] = held_out(v1)
    copy = example_derive(
        origin=origin, messages=origin.messages, origin_kind=OriginKind.EVALUATION_FAILURE
    )
    copy_of_copy = example_derive(
        origin=copy, messages=origin.messages, origin_kind=OriginKind.PRODUCTION_FEEDBACK
    )
    approve([copy, copy_of_copy], lead)
    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert sides(v2)[copy_of_copy.pk] == Split.VALIDATION


def test_a_copy_stays_held_out_after_its_origin_was_rejected(dataset: Dataset, lead: User) -> None:
    approved_examples(dataset, 20)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    [origin, *_] = held_out(v1)
    copy = example_derive(
        origin=origin, messages=origin.messages, origin_kind=OriginKind.EVALUATION_FAILURE
    )
    approve([copy], lead)
    example_review(example=origin, user=lead, action=ReviewAction.REJECT)
    # 20 examples again, so the carried split would put the one new example in training.
    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert origin.pk not in sides(v2)
    assert sides(v2)[copy.pk] == Split.VALIDATION


def test_moving_a_copy_to_training_retires_its_origin_and_says_how_much_validation_shrinks(
    dataset: Dataset, lead: User
) -> None:
    approved_examples(dataset, 40)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    [origin, *_] = held_out(v1)
    copy = example_derive(
        origin=origin,
        messages=chat(origin.messages[1]["content"], "bug", "low"),
        origin_kind=OriginKind.EVALUATION_FAILURE,
    )
    approve([copy], lead)

    retirement, shrink = example_move_to_training(example=copy, user=lead, reason="  relabelled ")
    assert (retirement.origin_id, retirement.derived_id, retirement.reason) == (
        origin.pk,
        copy.pk,
        "relabelled",
    )
    assert (shrink.before, shrink.after, retirement.validation_count_before) == (8, 7, 8)
    assert "shrinks from 8 to 7 items" in shrink.warning

    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    after = sides(v2)
    assert (after[copy.pk], after[origin.pk]) == (Split.TRAIN, Split.TRAIN)
    assert v2.retired_from_validation == [origin.pk]
    assert v2.validation_count == 7  # 20 % of 41 is 8, all kept from v1, less the retired one
    # The retirement holds for later freezes too, and nothing new is recorded as retired.
    v3 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert (sides(v3)[copy.pk], sides(v3)[origin.pk]) == (Split.TRAIN, Split.TRAIN)
    assert v3.retired_from_validation == []


def test_moving_one_copy_takes_the_origin_and_every_copy_that_followed_it_out_of_validation(
    dataset: Dataset, lead: User
) -> None:
    approved_examples(dataset, 40)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    [origin, *_] = held_out(v1)
    copies = [
        example_derive(
            origin=origin, messages=origin.messages, origin_kind=OriginKind.EVALUATION_FAILURE
        )
        for _ in range(2)
    ]
    approve(copies, lead)
    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert v2.validation_count == 10

    _, shrink = example_move_to_training(example=copies[0], user=lead)
    assert (shrink.before, shrink.after) == (10, 7)
    assert "leaves validation with 2 copies of it" in shrink.warning

    v3 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert {sides(v3)[e.pk] for e in (origin, *copies)} == {Split.TRAIN}
    assert v3.validation_count == 7


def test_moving_is_refused_for_an_example_with_no_origin_and_for_a_second_time(
    dataset: Dataset, lead: User
) -> None:
    [plain, origin] = approved_examples(dataset, 2)
    with pytest.raises(ApplicationError, match="not made from another example"):
        example_move_to_training(example=plain, user=lead)
    copy = example_derive(
        origin=origin, messages=origin.messages, origin_kind=OriginKind.EVALUATION_FAILURE
    )
    example_move_to_training(example=copy, user=lead)
    with pytest.raises(ConflictError, match="already moved to training"):
        example_move_to_training(example=copy, user=lead)
    assert ValidationRetirement.objects.count() == 1


def duplicate_of(example: Example, *, text: str | None = None) -> Example:
    """A new approved example, not derived, that asks what ``example`` asks."""
    question = text if text is not None else example.messages[1]["content"]
    return Example.objects.create(
        dataset=example.dataset,
        messages=chat(question, "account", "low"),
        status=ExampleStatus.APPROVED,
    )


def test_a_freeze_with_train_and_validation_sharing_inputs_is_refused_with_the_pairs(
    dataset: Dataset, lead: User
) -> None:
    approved_examples(dataset, 9)
    long = Example.objects.create(
        dataset=dataset, messages=chat(LONG_TICKET, "bug", "high"), status=ExampleStatus.APPROVED
    )
    v1 = dataset_version_freeze(dataset=dataset, user=lead, seed=2, validation_fraction=0.2)
    assert sides(v1)[long.pk] == Split.VALIDATION, "seed 2 holds the long ticket out"
    [other] = [e for e in held_out(v1) if e.pk != long.pk]
    # Differently spaced and cased: still the same input. 20 % of 12 is 2, so both go to train.
    exact = duplicate_of(other, text="  " + other.messages[1]["content"].upper() + " ")
    near = duplicate_of(long, text=LONG_TICKET.rsplit(" ", 1)[0] + " whatsoever")

    with pytest.raises(SplitOverlapError) as refused:
        dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    pairs = refused.value.extra["overlaps"]
    assert [(p["train_example"], p["validation_example"], p["kind"]) for p in pairs] == [
        (exact.pk, other.pk, "exact"),
        (near.pk, long.pk, "near"),
    ]
    assert pairs[1]["similarity"] >= 0.8 and pairs[1]["kind_label"] == "near-duplicate"
    assert refused.value.extra["overlap_count"] == 2
    assert "2 train/validation pair(s) share their input (1 exact, 1 near-duplicate)" in (
        refused.value.message
    )
    assert refused.value.status_code == 400
    assert dataset.versions.count() == 1


def test_the_lead_may_freeze_anyway_with_a_reason_recorded_on_the_version(
    dataset: Dataset, lead: User
) -> None:
    approved_examples(dataset, 10)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    twin = duplicate_of(held_out(v1)[0])
    v2 = dataset_version_freeze(
        dataset=dataset,
        user=lead,
        validation_fraction=0.2,
        overlap_override_reason=" the two tickets came from different customers ",
    )
    assert v2.overlap_override_reason == "the two tickets came from different customers"
    assert v2.overlap_count == 1
    assert [(p["train_example"], p["kind"]) for p in v2.overlap_pairs] == [(twin.pk, "exact")]


def test_rejecting_one_side_resolves_the_pair(dataset: Dataset, lead: User) -> None:
    approved_examples(dataset, 10)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    twin = duplicate_of(held_out(v1)[0])
    with pytest.raises(SplitOverlapError):
        dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    example_review(example=twin, user=lead, action=ReviewAction.REJECT)
    v2 = dataset_version_freeze(
        dataset=dataset, user=lead, validation_fraction=0.2, overlap_override_reason="unused"
    )
    # Nothing overlapped, so nothing was overridden.
    assert (v2.overlap_override_reason, v2.overlap_count, v2.overlap_pairs) == ("", 0, [])


def test_a_derived_example_never_makes_a_pair_with_its_origin(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    # The copies ask exactly what their origins ask; following the origin keeps each pair on
    # one side, so the overlap check has nothing to refuse.
    v1 = frozen_version(project, lead, count=20)
    run = wrong_answers_for_validation(v1, lead, base_model)
    copies = eval_results_send_to_review(
        run=run, result_ids=list(EvalResult.objects.values_list("pk", flat=True)), user=lead
    )
    approve(copies, lead)
    v2 = dataset_version_freeze(dataset=v1.dataset, user=lead, validation_fraction=0.2)
    assert v2.overlap_count == 0


def test_a_first_freeze_that_following_origins_would_leave_one_sided_says_so(
    dataset: Dataset, lead: User
) -> None:
    [origin] = approved_examples(dataset, 1)
    copy = example_derive(
        origin=origin, messages=origin.messages, origin_kind=OriginKind.PRODUCTION_FEEDBACK
    )
    approve([copy], lead)
    with pytest.raises(ApplicationError, match="leaves one side of the split empty"):
        dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert dataset.versions.count() == 0
