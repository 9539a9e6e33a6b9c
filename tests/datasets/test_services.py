from __future__ import annotations

import json

import pytest

from datasets.imports.services import ImportRejected
from datasets.models import Dataset, Example, ExampleStatus, ReviewAction, ReviewDecision, Split
from datasets.selectors import version_export_lines
from datasets.services import (
    content_hash,
    dataset_version_freeze,
    example_review,
    split_assignment,
)
from ftportal.errors import ApplicationError, ConflictError
from ftportal.roles import Role
from tests.factories import TICKETS, approved_examples, chat, import_bytes, jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(project):
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member):
    return make_member(Role.ML_LEAD)


def test_a_file_with_one_bad_line_imports_nothing_and_names_the_line(dataset, lead):
    data = jsonl([chat(*TICKETS[0])]) + b'{"messages": [}\n' + jsonl([chat(*TICKETS[1])])
    with pytest.raises(ImportRejected) as rejected:
        import_bytes(dataset=dataset, data=data, user=lead)
    assert [e["line"] for e in rejected.value.extra["errors"]] == [2]
    assert Example.objects.count() == 0


def test_valid_lines_only_imports_the_rest_and_keeps_the_report(dataset, lead):
    data = jsonl([chat(*TICKETS[0])]) + b"not json\n" + jsonl([chat(*TICKETS[1])])
    batch = import_bytes(dataset=dataset, data=data, user=lead, valid_lines_only=True)
    assert batch.imported_count == 2
    assert [e["line"] for e in batch.errors] == [2]
    assert sorted(dataset.examples.values_list("source_line", flat=True)) == [1, 3]


def test_editing_an_answer_approves_it_and_logs_before_and_after(dataset, lead):
    [example] = import_bytes(
        dataset=dataset, data=jsonl([chat(*TICKETS[0])]), user=lead
    ).examples.all()
    example_review(example=example, user=lead, action=ReviewAction.EDIT, new_answer=' {"x": 1} ')
    example.refresh_from_db()
    assert example.status == ExampleStatus.APPROVED
    assert example.messages[-1]["content"] == '{"x": 1}'
    decision = ReviewDecision.objects.get()
    assert (decision.reviewer, decision.action) == (lead, ReviewAction.EDIT)
    assert decision.previous_answer == chat(*TICKETS[0])[-1]["content"]


def test_an_empty_edit_is_refused_and_changes_nothing(dataset, lead):
    [example] = approved_examples(dataset, 1)
    with pytest.raises(ApplicationError):
        example_review(example=example, user=lead, action=ReviewAction.EDIT, new_answer="  ")
    example.refresh_from_db()
    assert example.messages == chat(*TICKETS[0])
    assert not ReviewDecision.objects.exists()


def test_a_pending_example_cannot_be_reopened(dataset, lead):
    example = Example.objects.create(dataset=dataset, messages=chat(*TICKETS[0]))
    with pytest.raises(ConflictError):
        example_review(example=example, user=lead, action=ReviewAction.REOPEN)


def test_the_split_depends_only_on_count_seed_and_fraction():
    first = split_assignment(100, seed=7, validation_fraction=0.15)
    assert first == split_assignment(100, seed=7, validation_fraction=0.15)
    assert first != split_assignment(100, seed=8, validation_fraction=0.15)
    assert first.count(Split.VALIDATION) == 15


def test_the_content_hash_ignores_order_but_not_content():
    a, b = chat(*TICKETS[0]), chat(*TICKETS[1])
    assert content_hash([a, b]) == content_hash([b, a])
    assert content_hash([a, b]) != content_hash([a, chat(*TICKETS[2])])


@pytest.mark.parametrize("fraction", [0.05, 0.25])
def test_freezing_refuses_a_fraction_outside_ten_to_twenty_percent(dataset, lead, fraction):
    approved_examples(dataset)
    with pytest.raises(ApplicationError, match="validation_fraction"):
        dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=fraction)
    assert not dataset.versions.exists()


def test_a_frozen_version_keeps_its_content_when_examples_change_later(dataset, lead):
    examples = approved_examples(dataset)
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    example_review(example=examples[0], user=lead, action=ReviewAction.EDIT, new_answer="changed")
    assert version.items.get(example=examples[0]).messages == chat(*TICKETS[0])
    assert (version.train_count, version.validation_count) == (10, 2)
    again = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    assert again.number == 2 and again.content_hash != version.content_hash


def test_export_writes_one_chat_per_line_for_the_requested_split(dataset, lead):
    approved_examples(dataset)
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    lines = list(version_export_lines(version, split="validation"))
    assert len(lines) == version.validation_count
    assert all(json.loads(line)["messages"][-1]["role"] == "assistant" for line in lines)


def test_a_reply_weight_survives_import_and_export(dataset, lead):
    messages = chat(*TICKETS[0])
    messages[-1] = {**messages[-1], "weight": 0}
    line = json.dumps({"messages": messages}).encode() + b"\n"
    import_bytes(dataset=dataset, data=line + jsonl([chat(*TICKETS[1])]), user=lead)
    stored = dataset.examples.order_by("id").first()
    assert stored.messages[-1]["weight"] == 0
    assert "weight" not in dataset.examples.order_by("id").last().messages[-1]


def test_a_line_with_two_problems_counts_as_one_bad_line(dataset, lead):
    data = jsonl([chat(*TICKETS[0])]) + b'{"messages": [{"role": "robot", "content": ""}]}\n'
    with pytest.raises(ImportRejected) as rejected:
        import_bytes(dataset=dataset, data=data, user=lead)
    assert len(rejected.value.extra["errors"]) >= 2
    assert "1 line(s) have errors" in rejected.value.message


def sides(version):
    return dict(version.items.values_list("example_id", "split"))


def test_the_next_version_keeps_every_examples_side_and_places_only_new_ones(dataset, lead):
    first_examples = approved_examples(dataset, 20)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    example_review(example=first_examples[0], user=lead, action=ReviewAction.REJECT)
    approved_examples(dataset, 20)
    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    before, after = sides(v1), sides(v2)
    assert all(after[i] == before[i] for i in before if i in after)
    assert first_examples[0].pk not in after
    assert v2.validation_count == 8  # 20 % of 39, rounded, reached by placing new examples
    assert v2.split_carried_from == v1


def test_resplit_draws_a_new_split_from_the_seed(dataset, lead):
    approved_examples(dataset, 40)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, seed=1, validation_fraction=0.2)
    v2 = dataset_version_freeze(
        dataset=dataset, user=lead, seed=2, validation_fraction=0.2, resplit=True
    )
    assert v2.split_carried_from is None
    assert sides(v1) != sides(v2)
    assert v2.validation_count == 8


def test_a_carried_split_that_would_empty_validation_asks_for_a_resplit(dataset, lead):
    examples = approved_examples(dataset, 10)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)
    [held_out] = [e for e in examples if sides(v1)[e.pk] == Split.VALIDATION]
    example_review(example=held_out, user=lead, action=ReviewAction.REJECT)
    with pytest.raises(ApplicationError, match="re-split"):
        dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1)
    assert dataset.versions.count() == 1
