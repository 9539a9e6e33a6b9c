"""Held-out test sets at freeze: never split, the rest of the freeze as usual, and their exact and
near-duplicate overlap with every training version of the project checked, stored, and kept up
to date when training versions are frozen later."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User

from bench.test_set_overlap import near_copy, tickets
from datasets.contracts import LABEL_SET
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus, OriginKind, Split
from datasets.services import (
    SplitOverlapError,
    content_hash,
    dataset_contract_set,
    dataset_version_freeze,
    example_derive,
)
from datasets.test_sets import (
    overlapping_test_sets,
    overlaps_check,
    stored_overlaps,
    unchecked_training_versions,
)
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role

from .held_out_sets import approved_dataset, held_out_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member) -> User:
    return make_member(Role.ML_LEAD)


def entry_for(test_set: DatasetVersion, training: DatasetVersion) -> dict:
    test_set.refresh_from_db()
    (entry,) = [e for e in test_set.test_overlaps["versions"] if e["version"] == training.pk]
    return entry


def test_a_test_set_is_frozen_whole_with_every_item_a_test_item(
    project: Project, lead: User
) -> None:
    rows = tickets(2100, seed=11)
    dataset = approved_dataset(project, "held-out ✓", rows)
    version = dataset_version_freeze(dataset=dataset, user=lead, test_set=True, seed=7)

    assert version.is_test_set
    assert (version.example_count, version.train_count, version.validation_count) == (2100, 0, 0)
    assert set(version.items.values_list("split", flat=True)) == {Split.TEST}
    assert version.validation_fraction == 0.0
    assert version.split_carried_from is None
    # The same content hash a training freeze of these examples gets: content, not split.
    approved = Example.objects.filter(dataset=dataset).order_by("id")
    assert version.content_hash == content_hash([e.messages for e in approved])
    assert [i.messages for i in version.items.order_by("position")] == [
        e.messages for e in approved
    ]


def test_a_test_set_is_not_split_so_its_inputs_may_repeat_inside_it(
    project: Project, lead: User
) -> None:
    rows = tickets(300, seed=12)
    # Near copies of 40 inputs inside one dataset: a training freeze refuses the pairs that
    # land on both sides of its split; a test set has no sides.
    dataset = approved_dataset(
        project, "held-out", rows + [(near_copy(t), lab) for t, lab in rows[:40]]
    )
    with pytest.raises(SplitOverlapError):
        dataset_version_freeze(dataset=dataset, user=lead, resplit=True)
    version = dataset_version_freeze(dataset=dataset, user=lead, test_set=True)
    assert version.overlap_count == 0 and version.example_count == 340


def test_a_test_set_is_checked_against_the_answer_contract_like_any_freeze(
    project: Project, lead: User
) -> None:
    rows = tickets(200, seed=13)
    dataset = approved_dataset(project, "held-out", rows)
    labels = sorted({label for _, label in rows} - {rows[0][1]})
    dataset_contract_set(dataset=dataset, contract={"kind": LABEL_SET, "labels": labels})
    with pytest.raises(ApplicationError) as refused:
        dataset_version_freeze(dataset=dataset, user=lead, test_set=True)
    assert refused.value.extra["field"] == "contract_override_reason"
    version = dataset_version_freeze(
        dataset=dataset, user=lead, test_set=True, contract_override_reason="old label kept"
    )
    broken = sum(1 for _, label in rows if label == rows[0][1])
    assert len(version.contract_override["examples"]) == broken


def test_a_test_set_needs_one_approved_example_and_ignores_the_split_settings(
    project: Project, lead: User
) -> None:
    empty = Dataset.objects.create(project=project, name="empty")
    with pytest.raises(ApplicationError) as refused:
        dataset_version_freeze(dataset=empty, user=lead, test_set=True)
    assert refused.value.extra["field"] == "test_set"
    one = approved_dataset(project, "one", tickets(1, seed=14))
    # A validation fraction out of the training range does not apply to a test set.
    version = dataset_version_freeze(
        dataset=one, user=lead, test_set=True, validation_fraction=0.9, resplit=True
    )
    assert version.example_count == 1 and version.validation_fraction == 0.0


def test_overlap_with_the_training_versions_is_counted_exactly_and_nearly_with_the_pairs(
    project: Project, lead: User
) -> None:
    world = held_out_world(project, lead, train=2000, test=400, exact=20, near=15)
    entry = entry_for(world.test_set, world.training)
    assert (entry["exact"], entry["near"], entry["test_items"]) == (20, 15, 35)
    assert entry["pair_count"] == 35 and len(entry["pairs"]) == 35
    training_ids = {
        i.position: i.example_id for i in world.training.items.all()
    }  # position -> example
    test_ids = {i.position: i.example_id for i in world.test_set.items.all()}
    exact_pairs = [p for p in entry["pairs"] if p["kind"] == "exact"]
    near_pairs = [p for p in entry["pairs"] if p["kind"] == "near"]
    assert entry["pairs"][:20] == exact_pairs  # exact matches listed first
    # Each pair names both items: the training example whose input the test item repeats.
    training_text = {
        e.pk: e.messages[1]["content"]
        for e in Example.objects.filter(dataset=world.training.dataset)
    }
    test_text = {
        e.pk: e.messages[1]["content"]
        for e in Example.objects.filter(dataset=world.test_set.dataset)
    }
    for pair in exact_pairs:
        assert training_ids[pair["training_position"]] == pair["training_example"]
        assert test_ids[pair["test_position"]] == pair["test_example"]
        assert " ".join(test_text[pair["test_example"]].split()) == " ".join(
            training_text[pair["training_example"]].upper().split()
        )
        assert pair["similarity"] == 1.0
    for pair in near_pairs:
        assert test_text[pair["test_example"]] == training_text[pair["training_example"]] + " bitte"
        assert 0.8 <= pair["similarity"] < 1.0
    assert {p["training_split"] for p in entry["pairs"]} <= {Split.TRAIN, Split.VALIDATION}
    assert dt.datetime.fromisoformat(world.test_set.test_overlaps["checked_at"])


def test_every_training_version_gets_an_entry_and_a_clean_one_counts_zero(
    project: Project, lead: User
) -> None:
    world = held_out_world(project, lead, train=2000, test=300, exact=5, near=0)
    clean = dataset_version_freeze(
        dataset=approved_dataset(project, "other", tickets(500, seed=40, first_number=7_000_000)),
        user=lead,
    )
    entry = entry_for(world.test_set, clean)
    assert (entry["exact"], entry["near"], entry["pairs"]) == (0, 0, [])
    rows = stored_overlaps(world.test_set)
    assert [r.training_version for r in rows] == [world.training, clean]  # overlapping first
    assert [r.total for r in rows] == [5, 0]
    assert overlapping_test_sets(world.training)[0].test_set == world.test_set
    assert overlapping_test_sets(clean) == []


def test_a_training_version_frozen_later_is_checked_against_every_test_set(
    project: Project, lead: User
) -> None:
    world = held_out_world(project, lead, train=2000, test=300, exact=10, near=5)
    other_test_set = dataset_version_freeze(
        dataset=approved_dataset(
            project, "second held-out", tickets(50, seed=50, first_number=9_000_000)
        ),
        user=lead,
        test_set=True,
    )
    checked_before = world.test_set.test_overlaps["checked_at"]
    # Ten more examples approved: v2 of the training dataset still holds the shared inputs.
    dataset = world.training.dataset
    for text, label in tickets(10, seed=60, first_number=8_000_000):
        Example.objects.create(
            dataset=dataset,
            messages=[
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ],
            status=ExampleStatus.APPROVED,
        )
    v2 = dataset_version_freeze(dataset=dataset, user=lead)
    assert v2.number == 2
    entry = entry_for(world.test_set, v2)
    assert (entry["exact"], entry["near"]) == (10, 5)
    assert world.test_set.test_overlaps["checked_at"] > checked_before
    # The first training version's entry is kept as it was.
    assert entry_for(world.test_set, world.training)["exact"] == 10
    assert entry_for(other_test_set, v2)["exact"] == 0
    assert unchecked_training_versions(world.test_set) == []


def test_a_training_freeze_carries_the_split_of_the_last_training_version_not_a_test_set(
    project: Project, lead: User
) -> None:
    rows = tickets(120, seed=70)
    dataset = approved_dataset(project, "both", rows)
    v1 = dataset_version_freeze(dataset=dataset, user=lead)
    v2 = dataset_version_freeze(dataset=dataset, user=lead, test_set=True)
    v3 = dataset_version_freeze(dataset=dataset, user=lead)
    assert v3.split_carried_from == v1
    assert dict(v3.items.values_list("example_id", "split")) == dict(
        v1.items.values_list("example_id", "split")
    )
    # The same examples in both: the test set says so.
    assert entry_for(v2, v3)["exact"] == 120
    assert entry_for(v2, v1)["test_items"] == 120


def test_a_copy_of_a_test_item_is_never_frozen_into_training(project: Project, lead: User) -> None:
    test_dataset = approved_dataset(project, "held-out", tickets(30, seed=80))
    test_set = dataset_version_freeze(dataset=test_dataset, user=lead, test_set=True)
    origin = test_set.items.order_by("position").first()
    assert origin is not None and origin.example is not None
    training = approved_dataset(project, "train", tickets(60, seed=81, first_number=5_000))
    # A failure on a test item corrected in review and added to the training dataset.
    copy = example_derive(
        origin=origin.example,
        messages=[
            {"role": "user", "content": "Refund für Bestellung №7 — 请尽快"},
            {"role": "assistant", "content": "intent_refund"},
        ],
        origin_kind=OriginKind.EVALUATION_FAILURE,
    )
    Example.objects.filter(pk=copy.pk).update(dataset=training, status=ExampleStatus.APPROVED)
    for seed in range(5):
        version = dataset_version_freeze(dataset=training, user=lead, seed=seed, resplit=True)
        assert version.items.get(example_id=copy.pk).split == Split.VALIDATION


def test_checking_again_covers_a_training_version_the_stored_check_missed(
    project: Project, lead: User
) -> None:
    world = held_out_world(project, lead, train=2000, test=200, exact=3, near=2)
    # As if the training version had been frozen while the test set's freeze was running.
    DatasetVersion.objects.filter(pk=world.test_set.pk).update(
        test_overlaps={"checked_at": world.test_set.test_overlaps["checked_at"], "versions": []}
    )
    world.test_set.refresh_from_db()
    assert unchecked_training_versions(world.test_set) == [world.training]
    checked = overlaps_check(test_set=world.test_set)
    assert unchecked_training_versions(checked) == []
    assert entry_for(checked, world.training)["exact"] == 3
    with pytest.raises(ApplicationError) as refused:
        overlaps_check(test_set=world.training)
    assert refused.value.extra["field"] == "version"
