"""Each validation rule: a conversation that breaks it, and ones that must pass."""

from __future__ import annotations

import numpy as np

from datasets.quality.findings import (
    EMPTY_CONTENT,
    ERROR,
    MISSING_MESSAGES,
    NO_ASSISTANT_ANSWER,
    OVER_CONTEXT,
    ROLE_ORDER,
    UNKNOWN_KEY,
    UNKNOWN_ROLE,
    WARNING,
)
from datasets.quality.validation import validate_conversations

from .conftest import convo


def only(conversation, **options):
    return [
        (i.kind, i.severity, i.message) for i in validate_conversations([conversation], **options)
    ]


def test_a_well_formed_conversation_passes_every_rule():
    assert only(convo("Printer jammed", "hardware")) == []
    assert only(convo("Printer jammed", "hardware", system=None)) == []
    multi_turn = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "printer?"},
        {"role": "assistant", "content": "hardware", "weight": 1},
    ]
    assert only(multi_turn, strict_alternation=True) == []


def test_missing_or_empty_messages_are_errors():
    for value in ([], None, "text"):
        [(kind, severity, message)] = only(value)
        assert (kind, severity) == (MISSING_MESSAGES, ERROR)
        assert message.startswith("messages:")


def test_unknown_role_names_the_field():
    conversation = convo("q", "a")
    conversation[1]["role"] = "customer"
    kinds = only(conversation)
    assert (
        UNKNOWN_ROLE,
        ERROR,
        "messages[1].role: role 'customer' is not one of assistant, system, user",
    ) in kinds


def test_roles_and_contents_of_any_json_type_are_reported_not_crashed_on():
    conversation = convo("q", "a")
    conversation[1]["role"] = ["user"]  # unhashable: a set lookup alone would raise
    conversation[2]["content"] = {"text": "a"}
    conversation[2]["name"] = 7
    kinds = {(kind, message) for kind, _, message in only(conversation)}
    assert (
        UNKNOWN_ROLE,
        "messages[1].role: role ['user'] is not one of assistant, system, user",
    ) in kinds
    assert (EMPTY_CONTENT, "messages[2].content: found no text; expected text") in kinds


def test_unknown_key_is_an_error_with_its_path():
    conversation = convo("q", "a")
    conversation[2]["confidence"] = 0.9
    [(kind, severity, message)] = only(conversation)
    assert (kind, severity) == (UNKNOWN_KEY, ERROR)
    assert message.startswith("messages[2].confidence:")


def test_the_last_message_must_be_the_assistants_answer():
    conversation = convo("q", "a")[:-1]
    kinds = [k for k, _, _ in only(conversation)]
    assert kinds == [NO_ASSISTANT_ANSWER]
    assert only(conversation)[0][2].startswith("messages[1].role:")


def test_roles_out_of_order_warn_for_openai_and_fail_for_anthropic_style_targets():
    conversation = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "answer"},
    ]
    [(kind, severity, message)] = only(conversation)
    assert (kind, severity) == (ROLE_ORDER, WARNING)
    assert message.startswith("messages[2].role: found 'user' where 'assistant'")
    [(kind, severity, _)] = only(conversation, strict_alternation=True)
    assert (kind, severity) == (ROLE_ORDER, ERROR)
    # A system message later in the conversation is out of order too.
    late_system = convo("q", "a", system=None)
    late_system.insert(1, {"role": "system", "content": "s"})
    assert ROLE_ORDER in [k for k, _, _ in only(late_system)]


def test_empty_and_whitespace_only_content_are_errors():
    for content, described in (
        ("", "an empty string"),
        ("  \n\t", "only whitespace"),
        (None, "no text"),
    ):
        conversation = convo("q", "a")
        conversation[1]["content"] = content
        [(kind, severity, message)] = only(conversation)
        assert (kind, severity) == (EMPTY_CONTENT, ERROR)
        assert message == f"messages[1].content: found {described}; expected text"


def test_over_the_context_length_is_an_error_and_at_the_limit_is_not():
    conversations = [convo("q", "a"), convo("q", "b")]
    issues = validate_conversations(
        conversations, total_tokens=np.array([101, 100]), context_window=100
    )
    assert [(i.index, i.kind, i.severity) for i in issues] == [(0, OVER_CONTEXT, ERROR)]
    assert "101 tokens" in issues[0].message
