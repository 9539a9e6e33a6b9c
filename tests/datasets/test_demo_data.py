"""The committed demo dataset is valid, balanced, exactly formatted and reproducible."""

from __future__ import annotations

import collections
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.formats import OPENAI_CHAT, ImportOptions, parse_bytes
from datasets.jsonl import ParseReport

DEMO_DIR = Path(__file__).resolve().parents[2] / "config" / "demo"
GENERATOR = DEMO_DIR / "make_support_triage.py"
CLEAN = DEMO_DIR / "support_triage.jsonl"
FLAWED = DEMO_DIR / "support_triage_flawed.jsonl"
README = DEMO_DIR / "README.md"

CATEGORIES = {"billing", "bug", "account", "feature_request"}
PRIORITIES = {"low", "medium", "high"}
# Word-trigram overlap above which two tickets count as near-duplicates.
NEAR_DUPLICATE_SIMILARITY = 0.8


def parse(path: Path) -> ParseReport:
    return parse_bytes(
        path.read_bytes(), filename=path.name, options=ImportOptions(format=OPENAI_CHAT)
    )


def tickets(report: ParseReport) -> list[str]:
    return [example.messages[1]["content"] for example in report.examples]


def answers(report: ParseReport) -> list[str]:
    return [example.messages[-1]["content"] for example in report.examples]


def well_formed_label(answer: str) -> dict[str, str] | None:
    """The label if ``answer`` is exactly the trained format, else None."""
    try:
        label = json.loads(answer)
    except json.JSONDecodeError:
        return None
    if not isinstance(label, dict) or list(label) != ["category", "priority"]:
        return None
    if label["category"] not in CATEGORIES or label["priority"] not in PRIORITIES:
        return None
    # Byte-exact: same key order and spacing as json.dumps, nothing around it.
    return label if json.dumps(label) == answer else None


def similarity(first: str, second: str) -> float:
    """Jaccard overlap of lowercase word trigrams: cheap, and blind to case and spacing."""

    def trigrams(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}

    a, b = trigrams(first), trigrams(second)
    return len(a & b) / len(a | b)


@pytest.mark.parametrize("path", [CLEAN, FLAWED], ids=lambda path: path.name)
def test_both_demo_files_parse_without_errors(path: Path) -> None:
    report = parse(path)

    assert report.errors == []
    assert report.ok


def test_every_clean_example_is_system_user_assistant_with_one_shared_instruction() -> None:
    report = parse(CLEAN)

    assert all(
        [message["role"] for message in example.messages] == ["system", "user", "assistant"]
        for example in report.examples
    )
    assert len({example.messages[0]["content"] for example in report.examples}) == 1


def test_the_clean_file_has_130_to_140_examples_all_in_the_exact_answer_format() -> None:
    report = parse(CLEAN)

    assert 130 <= len(report.examples) <= 140
    malformed = [answer for answer in answers(report) if well_formed_label(answer) is None]
    assert malformed == []


def test_every_category_has_at_least_25_clean_examples_and_priorities_are_mixed() -> None:
    labels = [well_formed_label(answer) for answer in answers(parse(CLEAN))]
    categories = collections.Counter(label["category"] for label in labels if label)
    priorities = collections.Counter(label["priority"] for label in labels if label)

    assert set(categories) == CATEGORIES
    assert min(categories.values()) >= 25
    assert set(priorities) == PRIORITIES
    assert min(priorities.values()) >= 20


def test_no_clean_ticket_appears_twice() -> None:
    clean_tickets = tickets(parse(CLEAN))

    assert len(set(clean_tickets)) == len(clean_tickets)


def test_exactly_the_two_planted_near_duplicates_closely_copy_a_clean_ticket() -> None:
    clean_tickets = tickets(parse(CLEAN))
    flawed_tickets = tickets(parse(FLAWED))

    closest_clean_pair = max(similarity(a, b) for a, b in itertools.combinations(clean_tickets, 2))
    copies = [
        ticket
        for ticket in flawed_tickets
        if max(similarity(ticket, clean) for clean in clean_tickets) >= NEAR_DUPLICATE_SIMILARITY
    ]

    # Otherwise a duplicate detector would flag clean examples along with the planted ones.
    assert closest_clean_pair < NEAR_DUPLICATE_SIMILARITY
    assert len(copies) == 2
    assert not set(flawed_tickets) & set(clean_tickets)


def test_the_flawed_file_holds_14_examples_six_with_a_malformed_answer() -> None:
    # Not JSON, prose around it, misspelled key, Spanish, "urgent", and "{}"; the other eight
    # look right and need a reader: wrong labels, private data, near-duplicates.
    flawed_answers = answers(parse(FLAWED))

    malformed = [answer for answer in flawed_answers if well_formed_label(answer) is None]

    assert len(flawed_answers) == 14
    assert len(malformed) == 6


def test_the_readme_is_at_most_10_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 10


def test_the_generator_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    for committed in (CLEAN, FLAWED, README):
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), committed.name
