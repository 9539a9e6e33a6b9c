"""Answer contracts: what a right answer looks like, declared once per dataset.

A contract is plain JSON, stored on ``Dataset.answer_contract`` and copied onto each
``DatasetVersion`` at freeze. ``{}`` means no contract; otherwise one of:

- ``{"kind": "label_set", "labels": ["billing", ...]}``: the answer, without surrounding
  whitespace, is exactly one of the labels;
- ``{"kind": "json_schema", "schema": {...}}``: the answer is JSON that validates against the
  JSON Schema (the draft named by ``$schema``, else 2020-12);
- ``{"kind": "regex", "pattern": "..."}``: the whole answer matches the regular expression.

Plain Python (no Django), so the quality analyzers, import, freeze, the review card and
evaluation all check an answer the same way.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import jsonschema
import referencing.exceptions
from jsonschema.exceptions import relevance
from jsonschema.protocols import Validator

from ftportal.errors import ApplicationError

LABEL_SET = "label_set"
JSON_SCHEMA = "json_schema"
REGEX = "regex"
KIND_LABELS = {
    LABEL_SET: "label set",
    JSON_SCHEMA: "JSON Schema",
    REGEX: "regular expression",
}
KIND_FIELDS = {LABEL_SET: "labels", JSON_SCHEMA: "schema", REGEX: "pattern"}

MAX_LABELS = 1000
MAX_LABEL_CHARS = 200
MAX_PATTERN_CHARS = 2000
MAX_SCHEMA_CHARS = 100_000
# How many labels a violation message lists before "and N more".
LABELS_SHOWN = 8
# Violation messages quote the answer; a long answer is cut so the message stays readable.
QUOTED_CHARS = 60
MESSAGE_CHARS = 300
# How many schema errors one violation message names.
ERRORS_SHOWN = 3
FIELD = "answer_contract"


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", extra={"field": field})


def _quote(text: str) -> str:
    cut = text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…"
    return repr(cut)


def _clean_labels(raw: object) -> list[str]:
    field = f"{FIELD}.labels"
    if not isinstance(raw, list) or not raw:
        raise _invalid(field, "a label set needs a non-empty list of labels.")
    if len(raw) > MAX_LABELS:
        raise _invalid(field, f"{len(raw)} labels, over the limit of {MAX_LABELS}.")
    labels: list[str] = []
    seen: set[str] = set()
    for position, label in enumerate(raw):
        where = f"{field}[{position}]"
        if not isinstance(label, str) or not label.strip():
            raise _invalid(where, "each label is a non-empty text.")
        label = label.strip()
        if len(label) > MAX_LABEL_CHARS:
            raise _invalid(where, f"{len(label)} characters, over the limit of {MAX_LABEL_CHARS}.")
        if label in seen:
            raise _invalid(where, f"the label {_quote(label)} is listed twice.")
        seen.add(label)
        labels.append(label)
    return labels


def _check_pattern(raw: object) -> str:
    field = f"{FIELD}.pattern"
    if not isinstance(raw, str) or not raw:
        raise _invalid(field, "a regular-expression contract needs a non-empty pattern.")
    if len(raw) > MAX_PATTERN_CHARS:
        raise _invalid(field, f"{len(raw)} characters, over the limit of {MAX_PATTERN_CHARS}.")
    try:
        re.compile(raw)
    except re.error as error:
        raise _invalid(field, f"not a valid regular expression: {error}.") from error
    return raw


def _check_schema(raw: object) -> dict[str, Any]:
    field = f"{FIELD}.schema"
    if not isinstance(raw, dict):
        raise _invalid(field, "a JSON Schema contract needs a schema object.")
    try:
        size = len(json.dumps(raw))
    except (TypeError, ValueError) as error:
        raise _invalid(field, f"not JSON: {error}.") from error
    if size > MAX_SCHEMA_CHARS:
        raise _invalid(field, f"{size} characters, over the limit of {MAX_SCHEMA_CHARS}.")
    cls = jsonschema.validators.validator_for(raw, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(raw)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" at {where}" if where else ""
        raise _invalid(field, f"not a valid JSON Schema{at}: {error.message}.") from error
    try:
        # A schema that points elsewhere ($ref to a URL) cannot be checked offline.
        list(cls(raw).iter_errors(None))
    except referencing.exceptions.Unresolvable as error:
        raise _invalid(field, f"refers to something it does not contain: {error}.") from error
    return raw


def clean_contract(raw: object) -> dict[str, Any]:
    """The contract as stored, or an ApplicationError naming the field that is wrong.

    ``{}`` (or None) clears the contract.
    """
    if raw is None or raw == {}:
        return {}
    if not isinstance(raw, dict):
        raise _invalid(FIELD, "an object with a kind, or {} for no contract.")
    kind = raw.get("kind")
    if kind not in KIND_FIELDS:
        raise _invalid(
            f"{FIELD}.kind",
            f"{kind!r} is not a contract kind; use one of {', '.join(KIND_FIELDS)}.",
        )
    expected = {"kind", KIND_FIELDS[kind]}
    unknown = sorted(set(raw) - expected)
    if unknown:
        raise _invalid(
            f"{FIELD}.{unknown[0]}",
            f"unknown key for a {KIND_LABELS[kind]} contract; it takes {KIND_FIELDS[kind]}.",
        )
    if kind == LABEL_SET:
        return {"kind": kind, "labels": _clean_labels(raw.get("labels"))}
    if kind == REGEX:
        return {"kind": kind, "pattern": _check_pattern(raw.get("pattern"))}
    return {"kind": kind, "schema": _check_schema(raw.get("schema"))}


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator: Validator = cls(schema)
    return validator


@lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@lru_cache(maxsize=64)
def _label_set(labels: tuple[str, ...]) -> frozenset[str]:
    return frozenset(labels)


def label_form(answer: str) -> str:
    """The form in which an answer is compared with a label set's labels (the labels are
    stored in it): without surrounding whitespace. Evaluation maps answers to labels through
    it, so a label it counts as answered is one this check accepts."""
    return answer.strip()


def _label_list(labels: list[str]) -> str:
    shown = ", ".join(labels[:LABELS_SHOWN])
    more = len(labels) - LABELS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _json_violation(schema: Mapping[str, Any], answer: str) -> str | None:
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as error:
        return (
            f"The answer is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}."
        )
    except RecursionError:
        return "The answer is not valid JSON: it is nested too deeply."
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        # Most relevant first (jsonschema's own ranking); a misspelled key is both an unknown
        # and a missing one, and the reviewer should see both.
        errors = sorted(validator.iter_errors(value), key=relevance, reverse=True)[:ERRORS_SHOWN]
    except referencing.exceptions.Unresolvable as unresolvable:
        return f"The contract's schema cannot be checked: {unresolvable}."
    if not errors:
        return None
    return "; ".join(f"{_json_path(e)}: {e.message}" for e in errors)[:MESSAGE_CHARS]


def _json_path(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"${where}" if where else "the answer"


def contract_violation(contract: Mapping[str, Any], answer: str) -> str | None:
    """Why ``answer`` breaks ``contract``, in words a reviewer can act on; None when it keeps
    it (or there is no contract)."""
    kind = contract.get("kind") if contract else None
    if kind is None:
        return None
    if kind == LABEL_SET:
        labels = list(contract.get("labels") or [])
        if label_form(answer) in _label_set(tuple(labels)):
            return None
        return (
            f"The answer {_quote(answer.strip())} is not one of the {len(labels)} labels: "
            f"{_label_list(labels)}."
        )
    if kind == REGEX:
        pattern = str(contract.get("pattern", ""))
        if _pattern(pattern).fullmatch(answer):
            return None
        return f"The answer {_quote(answer)} does not match the pattern {_quote(pattern)}."
    if kind == JSON_SCHEMA:
        return _json_violation(contract.get("schema") or {}, answer.strip())
    return f"Unknown contract kind {kind!r}."


class ContractCheck:
    """One contract checked against many answers, each distinct answer once: datasets repeat
    their answers (a label, a small JSON object), and a JSON Schema check costs far more than a
    dictionary lookup (``python bench/contracts.py``). The memory is bounded, so a stream of
    distinct free-text answers does not grow it for ever."""

    MAX_REMEMBERED = 50_000

    def __init__(self, contract: Mapping[str, Any]) -> None:
        self.contract = contract
        self._seen: dict[str, str | None] = {}

    def violation(self, answer: str) -> str | None:
        if not self.contract:
            return None
        if answer in self._seen:
            return self._seen[answer]
        if len(self._seen) >= self.MAX_REMEMBERED:
            self._seen.clear()
        found = self._seen[answer] = contract_violation(self.contract, answer)
        return found


def describe_contract(contract: Mapping[str, Any]) -> str:
    """One line a person reads: what the contract asks of an answer."""
    kind = contract.get("kind") if contract else None
    if kind == LABEL_SET:
        labels = list(contract.get("labels") or [])
        return f"one of {len(labels)} labels: {_label_list(labels)}"
    if kind == REGEX:
        return f"text matching the regular expression {contract.get('pattern', '')}"
    if kind == JSON_SCHEMA:
        schema = contract.get("schema") or {}
        required = schema.get("required") if isinstance(schema, dict) else None
        fields = f" with {', '.join(map(str, required))}" if isinstance(required, list) else ""
        return f"JSON matching a schema{fields}"
    return "no contract: any answer is accepted"


def label_counts(answers: Iterable[str]) -> list[tuple[str, int]]:
    """Each distinct answer (stripped) with how many times it occurs, most frequent first:
    the label set a lead can derive from approved answers."""
    counts = Counter(answer.strip() for answer in answers if answer.strip())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def derived_label_set(answers: Iterable[str]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """A label-set contract built from the answers, with the count of each label; an
    ApplicationError when the answers do not look like labels (too many, too long, none)."""
    counts = label_counts(answers)
    if not counts:
        raise _invalid(f"{FIELD}.labels", "there are no approved answers to derive labels from.")
    if len(counts) > MAX_LABELS:
        raise _invalid(
            f"{FIELD}.labels",
            f"the approved answers have {len(counts)} distinct values, over the limit of "
            f"{MAX_LABELS} labels; they look like free text, not labels.",
        )
    longest = max(counts, key=lambda item: len(item[0]))[0]
    if len(longest) > MAX_LABEL_CHARS:
        raise _invalid(
            f"{FIELD}.labels",
            f"an approved answer has {len(longest)} characters, over the limit of "
            f"{MAX_LABEL_CHARS} for a label; the answers look like free text, not labels.",
        )
    return {"kind": LABEL_SET, "labels": [label for label, _ in counts]}, counts
