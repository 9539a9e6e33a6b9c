"""Under a label-set contract the freeze draws its split per label: every label with two
examples or more on both sides, a label with one example in training and named on the version,
the validation share close to the fraction, the same split from the same input and seed, a
carried split that fills the labels missing from validation with new examples, and the
held-out rules (derived examples follow their origins, the overlap check) still in force."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    OriginKind,
    Split,
)
from datasets.services import (
    SplitOverlapError,
    dataset_contract_set,
    dataset_version_freeze,
    example_derive,
    example_move_to_training,
)
from datasets.splits import label_stratified_assignment, validation_target
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role

from .label_data import (
    label_names,
    label_set_dataset,
    labelled_chat,
    labelled_examples,
    sentence,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="intents")


def sides_by_label(version: DatasetVersion) -> dict[str, Counter[str]]:
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for messages, split in version.items.values_list("messages", "split"):
        found[messages[-1]["content"].strip()][split] += 1
    return found


def seventy_seven_labels(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {label: rng.randint(1, 15) for label in label_names(77, rng)}


@pytest.mark.parametrize("seed", [3, 11])
def test_every_label_with_two_examples_is_on_both_sides_and_a_single_one_trains(
    dataset, lead, seed
):
    counts = seventy_seven_labels(seed)
    label_set_dataset(dataset, counts, random.Random(seed))
    version = dataset_version_freeze(dataset=dataset, user=lead, seed=seed)

    found = sides_by_label(version)
    assert set(found) == set(counts)
    for label, count in counts.items():
        assert sum(found[label].values()) == count, label
        if count == 1:
            assert found[label] == {Split.TRAIN: 1}, label
        else:
            assert found[label][Split.TRAIN] >= 1 and found[label][Split.VALIDATION] >= 1, label
            # No label gives validation more than its share of the fraction, rounded up.
            most = max(1, math.ceil(count * version.validation_fraction))
            assert found[label][Split.VALIDATION] <= most, label
    singles = sorted(label for label, count in counts.items() if count == 1)
    assert singles, "the drawn counts should include labels with one example"
    per_label = version.readiness["per_label"]
    assert sorted(per_label["single_example"]) == singles
    assert per_label["without_validation"] == [] and per_label["without_training"] == []


@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.2])
def test_the_validation_share_stays_close_to_the_fraction(dataset, lead, fraction):
    counts = seventy_seven_labels(5)
    label_set_dataset(dataset, counts, random.Random(5))
    needing_one = sum(1 for count in counts.values() if count > 1)
    total = sum(counts.values())
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=fraction)
    # Every label with two examples needs one held out; beyond those, the fraction decides.
    expected = max(needing_one, validation_target(total, fraction))
    assert version.validation_count == expected
    assert version.train_count + version.validation_count == total


def test_the_same_examples_and_seed_give_the_same_split_and_another_seed_another(dataset, lead):
    label_set_dataset(dataset, seventy_seven_labels(8), random.Random(8))
    first = dataset_version_freeze(dataset=dataset, user=lead, seed=9)
    again = dataset_version_freeze(dataset=dataset, user=lead, seed=9, resplit=True)
    other = dataset_version_freeze(dataset=dataset, user=lead, seed=10, resplit=True)

    def sides(version: DatasetVersion) -> list[tuple[int, str]]:
        return list(version.items.order_by("example_id").values_list("example_id", "split"))

    assert sides(first) == sides(again)
    assert sides(first) != sides(other)
    assert first.validation_count == other.validation_count


def test_a_carried_split_keeps_old_sides_and_gives_labels_missing_from_validation_new_ones(
    dataset, lead
):
    # Version 1 has no contract, so its split is the plain draw, blind to labels.
    rng = random.Random(21)
    counts = {label: rng.randint(2, 6) for label in label_names(30, rng)}
    labelled_examples(dataset, counts, rng)
    first = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)
    missing = sorted(
        label for label, seen in sides_by_label(first).items() if not seen["validation"]
    )
    assert len(missing) > 10, "a plain 10 % draw leaves many labels out of validation"
    # The lead declares the labels and adds two examples to some of the missing labels only.
    dataset_contract_set(dataset=dataset, contract={"kind": "label_set", "labels": list(counts)})
    topped_up, left_alone = missing[: len(missing) // 2], missing[len(missing) // 2 :]
    labelled_examples(dataset, dict.fromkeys(topped_up, 2), rng)

    second = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)

    assert second.split_carried_from == first
    old = dict(first.items.values_list("example_id", "split"))
    new = dict(second.items.values_list("example_id", "split"))
    assert all(new[pk] == side for pk, side in old.items())
    found = sides_by_label(second)
    assert all(found[label]["validation"] == 1 for label in topped_up)
    # Without new examples nothing can move: the gap is named on the version instead.
    assert sorted(second.readiness["per_label"]["without_validation"]) == left_alone
    # A re-split draws every label afresh.
    third = dataset_version_freeze(
        dataset=dataset, user=lead, validation_fraction=0.1, resplit=True
    )
    assert third.readiness["per_label"]["without_validation"] == []


def test_a_label_that_had_one_example_gets_a_held_out_one_when_it_grows(dataset, lead):
    rng = random.Random(2)
    counts = {label: 6 for label in label_names(10, rng)}
    lonely = "a label seen once"
    label_set_dataset(dataset, {**counts, lonely: 1}, rng)
    first = dataset_version_freeze(dataset=dataset, user=lead)
    assert sides_by_label(first)[lonely] == {"train": 1}
    assert first.readiness["per_label"]["single_example"] == [lonely]

    labelled_examples(dataset, {lonely: 1}, rng)
    second = dataset_version_freeze(dataset=dataset, user=lead)
    assert sides_by_label(second)[lonely] == {"train": 1, "validation": 1}
    assert second.readiness["per_label"]["single_example"] == []


def test_derived_examples_still_follow_their_origins_and_a_retired_origin_is_replaced(
    dataset, lead
):
    """A derived example joins its origin's side; moving one to training retires its origin.
    When that origin was its label's only held-out example, another example of the label that
    no rule ties down takes its place."""
    rng = random.Random(4)
    counts = {label: 4 for label in label_names(12, rng)}
    examples = label_set_dataset(dataset, counts, rng)
    target = examples[0]
    label = target.messages[-1]["content"].strip()
    copy = example_derive(
        origin=target,
        messages=labelled_chat(sentence(rng), label),
        origin_kind=OriginKind.EVALUATION_FAILURE,
    )
    Example.objects.filter(pk=copy.pk).update(status=ExampleStatus.APPROVED)
    example_move_to_training(example=copy, user=lead)
    ids = list(dataset.examples.filter(status=ExampleStatus.APPROVED).order_by("id"))
    labels = [e.messages[-1]["content"].strip() for e in ids]

    drew_the_origin_into_validation = 0
    for seed in range(8):
        drawn = label_stratified_assignment(
            [e.pk for e in ids], labels, previous={}, seed=seed, validation_fraction=0.15
        )
        drew_the_origin_into_validation += drawn[ids.index(target)] == Split.VALIDATION
        version = dataset_version_freeze(dataset=dataset, user=lead, seed=seed, resplit=True)
        sides = dict(version.items.values_list("example_id", "split"))
        assert sides[target.pk] == Split.TRAIN and sides[copy.pk] == Split.TRAIN
        assert sides_by_label(version)[label]["validation"] >= 1, seed
        assert version.readiness["per_label"]["without_validation"] == []
    assert drew_the_origin_into_validation, "some seed should have needed the replacement"


def test_train_and_validation_sharing_an_input_is_still_refused(dataset, lead):
    rng = random.Random(6)
    counts = {label: 5 for label in label_names(8, rng)}
    label_set_dataset(dataset, counts, rng)
    # Two examples of one label with the same input: the label needs both sides, so the pair
    # is split across them whatever the seed.
    text = sentence(rng)
    Example.objects.bulk_create(
        Example(dataset=dataset, messages=labelled_chat(text, "twins"), status="approved")
        for _ in range(2)
    )
    dataset_contract_set(
        dataset=dataset, contract={"kind": "label_set", "labels": [*counts, "twins"]}
    )
    with pytest.raises(SplitOverlapError) as refused:
        dataset_version_freeze(dataset=dataset, user=lead)
    assert refused.value.extra["field"] == "overlap_override_reason"
    assert not dataset.versions.exists()


def test_without_a_label_set_the_split_is_the_plain_seeded_draw(dataset, lead):
    rng = random.Random(9)
    labelled_examples(dataset, {label: 5 for label in label_names(20, rng)}, rng)
    version = dataset_version_freeze(dataset=dataset, user=lead)
    assert version.validation_count == validation_target(100, 0.15)
    assert "per_label" not in version.readiness


def test_a_freeze_of_two_thousand_examples_asks_as_many_queries_as_one_of_two_hundred(
    project, lead
):
    """The per-label draw reads nothing per example or per label: the freeze's queries do not
    grow with the data (its time is measured by hand, see the report)."""
    queries = []
    for name, labels, high in (("small", 20, 15), ("large", 180, 25)):
        dataset = Dataset.objects.create(project=project, name=name)
        rng = random.Random(labels)
        counts = {label: rng.randint(1, high) for label in label_names(labels, rng)}
        label_set_dataset(dataset, counts, rng)
        with CaptureQueriesContext(connection) as captured:
            version = dataset_version_freeze(dataset=dataset, user=lead)
        queries.append(len(captured))
        assert version.readiness["per_label"]["labels"] == labels
    assert dataset.examples.count() > 2000
    assert queries[0] == queries[1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=25),
    fraction=st.sampled_from([0.1, 0.15, 0.2]),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_a_fresh_draw_holds_every_rule_for_any_label_counts(counts, fraction, seed):
    labels = [f"label {i}" for i, count in enumerate(counts) for _ in range(count)]
    random.Random(seed).shuffle(labels)
    ids = list(range(100, 100 + len(labels)))
    sides = label_stratified_assignment(
        ids, labels, previous={}, seed=seed, validation_fraction=fraction
    )
    assert sides == label_stratified_assignment(
        ids, labels, previous={}, seed=seed, validation_fraction=fraction
    )
    per_label: dict[str, Counter[str]] = defaultdict(Counter)
    for label, side in zip(labels, sides, strict=True):
        per_label[label][side] += 1
    needing_one = sum(1 for count in counts if count > 1)
    # Seats beyond one a label come from examples a label can spare (it keeps one to train).
    spare = sum(count - 2 for count in counts if count > 1)
    target = validation_target(len(labels), fraction)
    expected = needing_one + min(max(0, target - needing_one), spare)
    assert sides.count(Split.VALIDATION) == expected
    for seen in per_label.values():
        total = seen[Split.TRAIN] + seen[Split.VALIDATION]
        if total == 1:
            assert seen[Split.TRAIN] == 1
        else:
            assert seen[Split.TRAIN] >= 1 and seen[Split.VALIDATION] >= 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=15),
    kept=st.lists(st.sampled_from(["train", "validation", None]), min_size=150, max_size=150),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_a_carried_draw_keeps_old_sides_and_fills_what_new_examples_can(counts, kept, seed):
    labels = [f"label {i}" for i, count in enumerate(counts) for _ in range(count)]
    ids = list(range(len(labels)))
    previous = {pk: side for pk, side in zip(ids, kept, strict=False) if side is not None}
    sides = label_stratified_assignment(
        ids, labels, previous=previous, seed=seed, validation_fraction=0.15
    )
    assert all(sides[pk] == side for pk, side in previous.items())
    for label in set(labels):
        mine = [pk for pk in ids if labels[pk] == label]
        new = [pk for pk in mine if pk not in previous]
        old_sides = {previous[pk] for pk in mine if pk in previous}
        final = Counter(sides[pk] for pk in mine)
        if len(mine) < 2 or not new:
            continue
        if "validation" not in old_sides and (old_sides or len(new) > 1):
            assert final[Split.VALIDATION] >= 1, label
        if "train" not in old_sides:
            assert final[Split.TRAIN] >= 1, label


def test_the_freeze_page_says_which_labels_the_split_could_not_hold_out(
    project, dataset, lead, client
):
    rng = random.Random(12)
    label_set_dataset(
        dataset, {**dict.fromkeys(label_names(8, rng), 5), "once": 1, "twice?": 1}, rng
    )
    client.force_login(lead)
    page = client.post(
        reverse("dataset_freeze", args=[project.pk, dataset.pk]), {"seed": "3"}, follow=True
    )
    version = dataset.versions.get()
    html = page.content.decode()
    assert f"Froze {version} ({version.example_count} examples); 2 label(s) with a single " in html
    assert 'id="version-single-example-labels"' in html
    assert "<code>once</code>" in html and "<code>twice?</code>" in html


def test_labels_that_all_have_a_single_example_are_refused_with_the_reason(dataset, lead):
    rng = random.Random(13)
    label_set_dataset(dataset, dict.fromkeys(label_names(6, rng), 1), rng)
    with pytest.raises(ApplicationError, match="Each of the 6 labels has a single approved"):
        dataset_version_freeze(dataset=dataset, user=lead)
    assert not dataset.versions.exists()
