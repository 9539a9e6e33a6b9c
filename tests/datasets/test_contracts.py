"""The answer-contract module: each kind, contracts refused with the field named, odd text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.contracts import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    clean_contract,
    contract_violation,
    derived_label_set,
    describe_contract,
)
from datasets.quality.findings import CONTRACT_VIOLATION, ERROR
from datasets.quality.report import analyze_conversations
from datasets.quality.tokens import tiktoken_counter
from ftportal.errors import ApplicationError

TRIAGE = {
    "kind": "json_schema",
    "schema": {
        "type": "object",
        "properties": {
            "category": {"enum": ["billing", "bug", "account", "feature_request"]},
            "priority": {"enum": ["low", "medium", "high"]},
        },
        "required": ["category", "priority"],
        "additionalProperties": False,
    },
}
LABELS = {"kind": "label_set", "labels": ["billing", "bug", "account"]}


def refusal(raw: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        clean_contract(raw)
    return caught.value


# -- label set ---------------------------------------------------------------------------------


def test_a_label_set_accepts_exactly_its_labels_ignoring_surrounding_whitespace() -> None:
    contract = clean_contract(LABELS)
    assert contract_violation(contract, "billing") is None
    assert contract_violation(contract, "  bug\n") is None
    assert contract_violation(contract, "Billing") is not None
    message = contract_violation(contract, "refund")
    assert message is not None and "'refund'" in message and "billing, bug, account" in message


def test_labels_are_stripped_when_the_contract_is_set() -> None:
    assert clean_contract({"kind": "label_set", "labels": [" billing ", "bug"]})["labels"] == [
        "billing",
        "bug",
    ]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "label_set", "labels": []}, "answer_contract.labels"),
        ({"kind": "label_set"}, "answer_contract.labels"),
        ({"kind": "label_set", "labels": "billing"}, "answer_contract.labels"),
        ({"kind": "label_set", "labels": ["a", "  "]}, "answer_contract.labels[1]"),
        ({"kind": "label_set", "labels": ["a", 3]}, "answer_contract.labels[1]"),
        ({"kind": "label_set", "labels": ["a", "b", "a"]}, "answer_contract.labels[2]"),
        ({"kind": "label_set", "labels": ["a"], "pattern": "x"}, "answer_contract.pattern"),
        ({"kind": "enum", "labels": ["a"]}, "answer_contract.kind"),
        ({"labels": ["a"]}, "answer_contract.kind"),
        (["a", "b"], "answer_contract"),
    ],
)
def test_a_bad_label_set_is_refused_naming_the_field(raw: object, field: str) -> None:
    error = refusal(raw)
    assert error.status_code == 400
    assert error.extra["field"] == field
    assert error.message.startswith(f"{field}: ")


def test_a_label_longer_than_the_limit_is_refused_and_one_at_the_limit_is_kept() -> None:
    at_limit = "x" * MAX_LABEL_CHARS
    assert clean_contract({"kind": "label_set", "labels": [at_limit]})["labels"] == [at_limit]
    error = refusal({"kind": "label_set", "labels": ["ok", "y" * (MAX_LABEL_CHARS + 1)]})
    assert error.extra["field"] == "answer_contract.labels[1]"
    assert str(MAX_LABEL_CHARS) in error.message


def test_many_labels_up_to_the_limit_work_and_the_message_lists_only_a_few() -> None:
    labels = [f"label-{i:04d}" for i in range(MAX_LABELS)]
    contract = clean_contract({"kind": "label_set", "labels": labels})
    assert contract_violation(contract, "label-0999") is None
    message = contract_violation(contract, "label-1000")
    assert message is not None and f"one of the {MAX_LABELS} labels" in message
    assert "and 992 more" in message and "label-0500" not in message
    error = refusal({"kind": "label_set", "labels": [*labels, "one-too-many"]})
    assert error.extra["field"] == "answer_contract.labels"


def test_labels_with_odd_characters_match_exactly() -> None:
    labels = ["café", "naïve résumé", "日本語", "emoji 🚀", 'quote "x"', "tab\there", "a|b(c)*"]
    contract = clean_contract({"kind": "label_set", "labels": labels})
    for label in labels:
        assert contract_violation(contract, label) is None
    # Unicode that looks the same but is composed differently is a different label.
    assert contract_violation(contract, "cafe\u0301") is not None
    assert contract_violation(contract, "a") is not None  # regex characters are not a pattern


def test_a_long_answer_is_cut_in_the_message() -> None:
    message = contract_violation(clean_contract(LABELS), "word " * 500)
    assert message is not None and len(message) < 300 and "…" in message


# -- JSON Schema -------------------------------------------------------------------------------


def test_a_json_schema_contract_checks_syntax_enums_keys_and_required_fields() -> None:
    contract = clean_contract(TRIAGE)
    assert contract_violation(contract, '{"category": "bug", "priority": "low"}') is None
    assert contract_violation(contract, ' {"priority": "low", "category": "bug"}\n') is None
    cases = {
        "Category: bug, priority: low": "not valid JSON",
        'Sure! {"category": "bug", "priority": "low"}': "not valid JSON",
        '{"category": "bug", "priority": "urgent"}': "$.priority: 'urgent' is not one of",
        '{"categroy": "bug", "priority": "low"}': "'category' is a required property",
        '{"category": "bug", "priority": "low", "x": 1}': "Additional properties",
        "{}": "required property",
        '["bug", "low"]': "is not of type 'object'",
    }
    for answer, expected in cases.items():
        message = contract_violation(contract, answer)
        assert message is not None and expected in message, (answer, message)


def test_a_fenced_json_answer_breaks_a_json_contract() -> None:
    # Training data teaches the exact output; a consumer parsing JSON gets the fence too.
    fenced = '```json\n{"category": "bug", "priority": "low"}\n```'
    assert "not valid JSON" in (contract_violation(clean_contract(TRIAGE), fenced) or "")


def test_json_schema_paths_name_nested_fields_and_list_positions() -> None:
    contract = clean_contract(
        {
            "kind": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
            },
        }
    )
    assert (contract_violation(contract, '{"tags": ["a", "c"]}') or "").startswith("$.tags[1]:")


def test_json_with_odd_characters_in_enums_matches_exactly() -> None:
    contract = clean_contract(
        {"kind": "json_schema", "schema": {"properties": {"label": {"enum": ["ünïcødé", "日本"]}}}}
    )
    assert contract_violation(contract, json.dumps({"label": "日本"}, ensure_ascii=False)) is None
    assert contract_violation(contract, json.dumps({"label": "ünïcødé"})) is None  # \\u escapes
    assert contract_violation(contract, '{"label": "unicode"}') is not None


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "objec"}, "not a valid JSON Schema at type"),
        ({"properties": {"a": {"enum": "low"}}}, "not a valid JSON Schema at properties/a/enum"),
        ("not an object", "needs a schema object"),
        ({"$ref": "https://example.com/remote.json"}, "refers to something it does not contain"),
    ],
)
def test_a_bad_json_schema_is_refused_naming_the_field(schema: object, expected: str) -> None:
    error = refusal({"kind": "json_schema", "schema": schema})
    assert error.extra["field"] == "answer_contract.schema"
    assert expected in error.message


def test_a_schema_that_names_its_draft_is_checked_under_that_draft() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}},
    }
    contract = clean_contract({"kind": "json_schema", "schema": draft4})
    assert contract_violation(contract, '{"n": 4}') is None
    assert contract_violation(contract, '{"n": 5}') is not None


def test_deeply_nested_json_is_a_violation_not_a_crash() -> None:
    answer = "[" * 100_000 + "]" * 100_000
    assert contract_violation(clean_contract(TRIAGE), answer) is not None


# -- regular expression ------------------------------------------------------------------------


def test_a_regex_contract_must_match_the_whole_answer() -> None:
    contract = clean_contract({"kind": "regex", "pattern": r"[A-Z]{3}-\d{4}"})
    assert contract_violation(contract, "ABC-1234") is None
    assert contract_violation(contract, "ABC-12345") is not None
    assert contract_violation(contract, "Ticket ABC-1234") is not None
    assert contract_violation(contract, "ABC-1234\n") is not None


def test_a_regex_contract_with_unicode_classes() -> None:
    contract = clean_contract({"kind": "regex", "pattern": r"\w+ · \d+ €"})
    assert contract_violation(contract, "Zürich · 42 €") is None


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[unclosed", "not a valid regular expression"),
        ("", "non-empty pattern"),
        (None, "non-empty pattern"),
        ("a" * 2001, "over the limit"),
    ],
)
def test_a_bad_pattern_is_refused_naming_the_field(pattern: object, expected: str) -> None:
    error = refusal({"kind": "regex", "pattern": pattern})
    assert error.extra["field"] == "answer_contract.pattern"
    assert expected in error.message


# -- no contract, descriptions, derived labels -------------------------------------------------


def test_no_contract_accepts_any_answer() -> None:
    assert clean_contract({}) == {} and clean_contract(None) == {}
    assert contract_violation({}, "anything at all") is None
    assert describe_contract({}) == "no contract: any answer is accepted"


def test_each_contract_is_described_in_words() -> None:
    assert describe_contract(LABELS) == "one of 3 labels: billing, bug, account"
    assert describe_contract(TRIAGE) == "JSON matching a schema with category, priority"
    assert describe_contract({"kind": "regex", "pattern": "a+"}) == (
        "text matching the regular expression a+"
    )


def test_a_label_set_is_derived_from_answers_with_counts_most_frequent_first() -> None:
    contract, counts = derived_label_set(["bug", "billing ", "bug", "account", "", "bug"])
    assert counts == [("bug", 3), ("account", 1), ("billing", 1)]
    assert contract == {"kind": "label_set", "labels": ["bug", "account", "billing"]}
    assert clean_contract(contract) == contract


def test_free_text_answers_do_not_make_a_label_set() -> None:
    with pytest.raises(ApplicationError, match="look like free text"):
        derived_label_set([f"answer number {i}" for i in range(MAX_LABELS + 1)])
    with pytest.raises(ApplicationError, match="look like free text"):
        derived_label_set(["short", "x" * (MAX_LABEL_CHARS + 1)])
    with pytest.raises(ApplicationError, match="no approved answers"):
        derived_label_set([])


# -- the quality analysis counts violations as errors ------------------------------------------


def conversation(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Ticket"}, {"role": "assistant", "content": answer}]


def test_the_analysis_reports_each_broken_answer_as_an_error_and_counts_it() -> None:
    conversations = [
        conversation('{"category": "bug", "priority": "low"}'),
        conversation("Category: bug"),
        conversation('{"category": "bug", "priority": "urgent"}'),
        [{"role": "user", "content": "no answer"}],
    ]
    result = analyze_conversations(
        conversations, counter=tiktoken_counter("o200k_base"), contract=clean_contract(TRIAGE)
    )
    found = [i for i in result.issues if i.kind == CONTRACT_VIOLATION]
    assert [(i.index, i.severity) for i in found] == [(1, ERROR), (2, ERROR)]
    assert result.stats["findings"][CONTRACT_VIOLATION]["examples"] == 2
    assert result.stats["findings"][CONTRACT_VIOLATION]["label"] == "Breaks the answer contract"
    # Before contracts, a non-JSON answer in a JSON dataset left "0 errors"; now it counts.
    assert result.stats["examples_with_errors"] >= 2
    without = analyze_conversations(conversations[:3], counter=tiktoken_counter("o200k_base"))
    assert without.stats["examples_with_errors"] == 0
    assert not np.any([i.kind == CONTRACT_VIOLATION for i in without.issues])
