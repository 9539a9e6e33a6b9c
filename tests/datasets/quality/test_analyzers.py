"""Every quality analyzer: examples that must trigger it and examples that must not."""

from __future__ import annotations

import random

import numpy as np
import pytest

from datasets.quality import analyzers, minhash
from datasets.quality.findings import (
    CONFLICTING_ANSWER,
    EXACT_DUPLICATE,
    LENGTH_OUTLIER,
    MARKUP,
    NEAR_DUPLICATE,
    PII_CARD,
    PII_EMAIL,
    PII_ID,
    PII_PHONE,
    SHORT_ANSWER,
)
from datasets.quality.report import analyze_conversations
from datasets.quality.tokens import tiktoken_counter

from .conftest import convo

WORDS = [f"word{i}" for i in range(3000)]


def ticket(rng: random.Random, words: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def run(conversations):
    return analyze_conversations(conversations, counter=tiktoken_counter("o200k_base"))


def kinds_by_index(result, kind):
    return sorted({i.index for i in result.issues if i.kind == kind})


def test_exact_duplicates_ignore_case_whitespace_and_unicode_forms():
    conversations = [
        convo("My printer is jammed", "hardware"),
        convo("  my PRINTER   is\njammed ", "HARDWARE"),
        convo("My ｐｒｉｎｔｅｒ is jammed", "hardware"),  # fullwidth letters: NFKC folds them
        convo("My printer is jammed", "network"),
    ]
    result = run(conversations)
    duplicates = [i for i in result.issues if i.kind == EXACT_DUPLICATE]
    assert sorted(i.index for i in duplicates) == [0, 1, 2]
    assert len({i.group_key for i in duplicates}) == 1
    assert "#1" in duplicates[0].message


def test_different_system_prompts_are_not_exact_duplicates():
    result = run([convo("q", "a", system="one"), convo("q", "a", system="two")])
    assert kinds_by_index(result, EXACT_DUPLICATE) == []


def test_near_duplicates_are_found_and_unrelated_texts_are_not():
    rng = random.Random(7)
    base = ticket(rng, 60)
    words = base.split()
    near = " ".join(words[:-3] + ["changed", "the", "end"])  # about 0.9 similar
    far_words = list(words)
    for position in range(0, 60, 2):
        far_words[position] = f"other{position}"
    far = " ".join(far_words)
    assert minhash.exact_jaccard(base, near) > 0.85
    assert minhash.exact_jaccard(base, far) < 0.35
    conversations = [convo(base, "hardware"), convo(near, "hardware"), convo(far, "hardware")]
    conversations += [convo(ticket(rng), "network") for _ in range(50)]
    result = run(conversations)
    assert kinds_by_index(result, NEAR_DUPLICATE) == [0, 1]
    assert result.stats["near_duplicate_pairs"] == 1


def test_conflicting_answers_need_the_same_input_and_different_answers():
    rng = random.Random(3)
    question = ticket(rng, 50)
    reworded = question.replace(question.split()[5], "slightly", 1)
    conversations = [
        convo(question, '{"category": "billing", "priority": "high"}'),
        convo(reworded, '{"category": "bug", "priority": "low"}'),
        convo(question, '{"category": "billing", "priority": "high"}'),
        convo(ticket(rng, 50), '{"category": "bug", "priority": "low"}'),
    ]
    result = run(conversations)
    assert kinds_by_index(result, CONFLICTING_ANSWER) == [0, 1, 2]
    # Same input and the same answer is a duplicate, not a conflict.
    agreeing = run([convo(question, "billing"), convo(question, " Billing ")])
    assert kinds_by_index(agreeing, CONFLICTING_ANSWER) == []


def test_length_outliers_use_robust_statistics():
    rng = random.Random(1)
    conversations = [convo(f"q{i}", ticket(rng, 20 + i % 5)) for i in range(30)]
    conversations.append(convo("long one", ticket(rng, 400)))
    result = run(conversations)
    assert kinds_by_index(result, LENGTH_OUTLIER) == [30]
    # A single extreme value does not hide the next one (a mean and SD would be dragged).
    assert kinds_by_index(run(conversations[:30]), LENGTH_OUTLIER) == []


def test_robust_z_scores_fall_back_when_most_values_are_equal():
    scores = analyzers.robust_z_scores(np.array([5] * 20 + [50]))
    assert scores[-1] > analyzers.OUTLIER_Z
    assert np.all(scores[:-1] == 0)


def test_very_short_answers_are_relative_to_the_typical_answer():
    rng = random.Random(2)
    conversations = [convo(f"question {i}", ticket(rng, 30)) for i in range(20)]
    conversations.append(convo("question x", "ok"))
    assert kinds_by_index(run(conversations), SHORT_ANSWER) == [20]
    labels = [convo(f"question {i}", rng.choice(["billing", "bug"])) for i in range(20)]
    assert kinds_by_index(run(labels), SHORT_ANSWER) == []
    labels.append(convo("question y", "k"))
    assert kinds_by_index(run(labels), SHORT_ANSWER) == [20]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe@example.co.uk today", PII_EMAIL),
        ("card 4111 1111 1111 1111 please", PII_CARD),
        ("card 5500-0000-0000-0004", PII_CARD),
        ("IBAN DE89 3704 0044 0532 0130 00", PII_ID),
        ("my SSN is 123-45-6789", PII_ID),
        ("call me on +1 415 555 2671", PII_PHONE),
        ("call (415) 555-2671 after 5", PII_PHONE),
        ("ring 020 7946 0958", PII_PHONE),
    ],
)
def test_personal_data_is_found(text, kind):
    assert [m.kind for m in analyzers.find_pii(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",  # Luhn-invalid: not a card
        "order 12345678901 shipped",  # a bare digit run is not a phone number
        "on 2024-01-15 at 10:30",
        "server 192.168.100.200 is down",
        "charged $89.50 twice",
        "invoice INV-2024-00123",
        "IBAN DE00 3704 0044 0532 0130 00",  # mod-97 check fails
        "code 000-12-3456",  # not a valid SSN area
        "email me at the office",
    ],
)
def test_lookalikes_are_not_personal_data(text):
    assert analyzers.find_pii(text) == []


def test_luhn():
    assert analyzers.luhn_valid("4111111111111111")
    assert analyzers.luhn_valid("79927398713")
    assert not analyzers.luhn_valid("79927398710")


def test_personal_data_findings_name_the_field_and_mask_the_value():
    result = run([convo("I'm jane@example.com, card 4111111111111111", "ok thanks")])
    messages = {i.kind: i.message for i in result.issues}
    assert messages[PII_EMAIL].startswith("messages[1].content: contains an e-mail address j***@")
    assert "4111111111111111" not in messages[PII_CARD]
    assert messages[PII_CARD].endswith("before training")


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ("Hello<br>there", "HTML tag"),
        ("Dear {{ customer_name }}, thanks", "placeholder"),
        ("Hi {first_name}, done", "placeholder"),
        ("Here:\n```python\nprint(1)\n", "code fence"),
        ("As an AI language model, I cannot", "as an AI language model"),
        ("Tom &amp; Jerry", "HTML entity"),
    ],
)
def test_leftover_markup_is_found(answer, what):
    result = run([convo("q", answer)])
    [issue] = [i for i in result.issues if i.kind == MARKUP]
    assert what in issue.message
    assert issue.message.startswith("Leftover markup: messages[2].content:")


@pytest.mark.parametrize(
    "answer",
    [
        '{"category": "bug", "priority": "low"}',
        "Use a < b and b > c",
        "Here:\n```python\nprint(1)\n```\ndone",
        "As an AI researcher I disagree",
    ],
)
def test_clean_answers_have_no_markup(answer):
    assert [i for i in run([convo("q", answer)]).issues if i.kind == MARKUP] == []


def test_the_ai_disclaimer_only_counts_in_answers():
    result = run([convo("As an AI language model, what do you think?", "hardware")])
    assert [i for i in result.issues if i.kind == MARKUP] == []
