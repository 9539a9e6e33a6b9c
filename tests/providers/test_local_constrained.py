"""Local generation constrained to an answer contract, with the real base model.

What is asserted: with a label set, every reply is exactly one of the labels; with a JSON
Schema, every reply parses and validates; with a regular expression, every reply matches it
whole; a batch of prompts of different lengths gives each row the reply it gets alone; and a
constraint that allows any text changes no token of the plain greedy decoding. No timings here:
bench/constrained.py measures what the constraint costs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import torch

from providers.base import AnswerConstraint, Conversation, ProviderError
from providers.constrained import TokenGuide
from providers.local.generation import LocalChatModel, greedy_decode
from providers.local.weights import ensure_base_model

# Many labels: some long, some sharing long prefixes ("bug" is a prefix of others, so a row may
# stop after it or go on), some with quotes, backslashes, slashes, tabs and non-ASCII letters.
LABELS: list[str] = [
    "bug",
    "bug report",
    "bug report: crash on start-up",
    "bug report: crash on start-up after the 4.2 update on Android tablets",
    "billing",
    "billing / refund",
    "billing / refund / partial",
    'feature request: "dark mode"',
    "account\\access",
    "tab\tseparated",
    "résumé upload",
    "naïve café ✓",
    "数据导出",
    "x",
    "?",
    *[f"category {number:02d}" for number in range(45)],
]
SYSTEM = f"Classify the message. Answer with exactly one of: {'; '.join(LABELS[:15])}."
# Deliberately of very different lengths, with and without a system prompt.
PROMPTS: list[Conversation] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "I was charged twice."}],
    [{"role": "user", "content": "The app crashes every time I open it on my tablet."}],
    [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Our team exports reports to CSV every Monday, but since the update "
            "last week the file is empty unless we pick a date range first. What should we "
            "check before contacting support again?",
        },
    ],
    [{"role": "user", "content": "Please add dark mode."}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Bonjour"}],
    [{"role": "user", "content": "Write a poem about invoices."}],
]
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "bug", "feature request", "account"]},
        "priority": {"enum": ["low", "normal", "urgent"]},
        "summary": {"type": "string", "maxLength": 40},
    },
    "required": ["category", "priority"],
    "additionalProperties": False,
}
PATTERN = r"[A-Z]{2,4}-\d{3}"
MAX_NEW_TOKENS = 64


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> LocalChatModel:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache_dir = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return LocalChatModel(ensure_base_model(cache_dir), device="cpu")


def label_set() -> AnswerConstraint:
    constraint = AnswerConstraint.from_contract({"kind": "label_set", "labels": LABELS})
    assert constraint is not None
    return constraint


def prompt_ids(chat: LocalChatModel, conversation: Conversation) -> list[int]:
    _model, tokenizer = chat.model_and_tokenizer()
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def guide_for(chat: LocalChatModel, constraint: AnswerConstraint) -> TokenGuide:
    model, tokenizer = chat.model_and_tokenizer()
    return TokenGuide(
        constraint,
        tokenizer,
        vocab_size=int(model.config.vocab_size),
        stop_ids=[int(tokenizer.eos_token_id)],
    )


def test_every_reply_is_exactly_one_of_the_labels(chat: LocalChatModel) -> None:
    plain = chat.generate_batch(PROMPTS, max_new_tokens=12, batch_size=8)
    # Otherwise the constraint would have nothing to do.
    assert any(generation.text not in LABELS for generation in plain)

    generations = chat.generate_batch(
        PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=8, constraint=label_set()
    )

    assert [generation.text for generation in generations if generation.text not in LABELS] == []
    # Each reply ended on the end-of-turn token, not at the length limit.
    assert all(generation.completion_tokens < MAX_NEW_TOKENS for generation in generations)


def test_every_reply_parses_and_validates_against_the_json_schema(chat: LocalChatModel) -> None:
    constraint = AnswerConstraint.from_contract({"kind": "json_schema", "schema": SCHEMA})

    generations = chat.generate_batch(
        PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=8, constraint=constraint
    )

    for generation in generations:
        jsonschema.validate(json.loads(generation.text), SCHEMA)


def test_every_reply_matches_the_regular_expression_whole(chat: LocalChatModel) -> None:
    constraint = AnswerConstraint.from_contract({"kind": "regex", "pattern": PATTERN})

    generations = chat.generate_batch(
        PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=8, constraint=constraint
    )

    assert [g.text for g in generations if not re.fullmatch(PATTERN, g.text)] == []


def test_batch_rows_of_different_lengths_give_the_reply_each_gets_alone(
    chat: LocalChatModel,
) -> None:
    model, tokenizer = chat.model_and_tokenizer()
    prompts = [prompt_ids(chat, conversation) for conversation in PROMPTS]
    stop_ids = torch.tensor([tokenizer.eos_token_id])
    guide = guide_for(chat, label_set())

    batched = greedy_decode(model, prompts, MAX_NEW_TOKENS, stop_ids, "cpu", guide=guide)
    alone = [
        greedy_decode(model, [prompt], MAX_NEW_TOKENS, stop_ids, "cpu", guide=guide)[0]
        for prompt in prompts
    ]

    assert batched == alone
    # Rows left the batch at different steps: replies of different token counts.
    assert len({len(tokens) for tokens in batched}) > 1
    for tokens in batched:
        assert tokens[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(tokens[:-1]) in LABELS


def test_a_constraint_that_allows_any_text_changes_no_token(chat: LocalChatModel) -> None:
    # The mask removes only disallowed tokens: the allowed ones keep their logits, and so the
    # greedy choice, step by step, for rows that stop early and rows that run to the limit.
    model, tokenizer = chat.model_and_tokenizer()
    prompts = [prompt_ids(chat, conversation) for conversation in PROMPTS]
    stop_ids = torch.tensor([tokenizer.eos_token_id])
    anything = AnswerConstraint.from_contract({"kind": "regex", "pattern": r"(?s:.*)"})
    assert anything is not None

    plain = greedy_decode(model, prompts, 24, stop_ids, "cpu")
    guided = greedy_decode(model, prompts, 24, stop_ids, "cpu", guide=guide_for(chat, anything))

    assert guided == plain
    assert any(tokens[-1] == tokenizer.eos_token_id for tokens in plain)
    assert any(len(tokens) == 24 for tokens in plain)


def test_the_end_of_turn_is_allowed_only_after_a_whole_label(chat: LocalChatModel) -> None:
    _model, tokenizer = chat.model_and_tokenizer()
    matchers = guide_for(chat, label_set()).start(2)
    matchers.advance([0], tokenizer.encode("bu", add_special_tokens=False))
    matchers.advance([1], tokenizer.encode("bug", add_special_tokens=False))

    allowed = matchers.allowed([0, 1])

    assert not allowed[0, tokenizer.eos_token_id]
    # "bug" is a label and the start of longer ones: it may stop or go on.
    assert allowed[1, tokenizer.eos_token_id]
    assert allowed[1].sum() > 1


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        ({"kind": "label_set", "labels": []}, "non-empty list of labels"),
        ({"kind": "label_set", "labels": ["a", ""]}, "label 2 is ''"),
        ({"kind": "json_schema", "schema": "not a schema"}, "needs a schema object"),
        ({"kind": "regex", "pattern": ""}, "needs a pattern"),
        ({"kind": "grammar"}, "unknown kind 'grammar'"),
    ],
)
def test_a_contract_that_cannot_constrain_says_what_is_wrong(
    contract: dict[str, object], message: str
) -> None:
    with pytest.raises(ProviderError, match=re.escape(message)):
        AnswerConstraint.from_contract(contract)


def test_no_contract_means_no_constraint() -> None:
    assert AnswerConstraint.from_contract({}) is None


def test_a_pattern_the_grammar_cannot_read_is_refused_before_generating(
    chat: LocalChatModel,
) -> None:
    constraint = AnswerConstraint.from_contract({"kind": "regex", "pattern": "[A-Z"})
    assert constraint is not None

    with pytest.raises(ProviderError, match=r"(?s)text matching /\[A-Z/.*unclosed character class"):
        chat.generate_batch(PROMPTS[:1], max_new_tokens=4, constraint=constraint)
