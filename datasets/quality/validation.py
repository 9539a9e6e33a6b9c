"""Per-example validation: errors (the provider would refuse the file or train on garbage)
and warnings (allowed, but probably not what was meant), each with the field path at fault.

Examples already in the database passed the importer, but other import formats, edits and the
API can still produce shapes a provider refuses, and the chosen base model decides how long
an example may be; so the checks run again before training, on what is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .findings import (
    EMPTY_CONTENT,
    ERROR,
    MISSING_MESSAGES,
    NO_ASSISTANT_ANSWER,
    OVER_CONTEXT,
    ROLE_ORDER,
    UNKNOWN_KEY,
    UNKNOWN_ROLE,
    WARNING,
    Issue,
)

ALLOWED_ROLES = frozenset({"system", "user", "assistant"})
ALLOWED_KEYS = frozenset({"role", "content", "name", "weight"})
_ROLE_LIST = ", ".join(sorted(ALLOWED_ROLES))
_KEY_LIST = ", ".join(sorted(ALLOWED_KEYS))


def role_order_problem(roles: tuple[str, ...]) -> tuple[int, str] | None:
    """Where a conversation breaks "optional system, then user and assistant alternating".

    Returns (position, what was expected there) for the first message out of order.
    """
    start = 1 if roles and roles[0] == "system" else 0
    for position in range(start, len(roles)):
        expected = "user" if (position - start) % 2 == 0 else "assistant"
        if roles[position] != expected:
            return position, expected
    return None


def validate_conversations(
    conversations: Sequence[object],
    *,
    strict_alternation: bool = False,
    total_tokens: np.ndarray | None = None,
    context_window: int | None = None,
) -> list[Issue]:
    """Check every conversation; ``strict_alternation`` makes out-of-order roles an error
    (Anthropic-style targets refuse them) instead of a warning."""
    issues: list[Issue] = []
    order_severity = ERROR if strict_alternation else WARNING
    # Datasets have few distinct role sequences, so each is checked once.
    order_cache: dict[tuple[str, ...], tuple[int, str] | None] = {}
    for index, messages in enumerate(conversations):
        if not isinstance(messages, list) or not messages:
            found = "an empty list" if isinstance(messages, list) else "no list of messages"
            issues.append(
                Issue(
                    index,
                    MISSING_MESSAGES,
                    ERROR,
                    f"messages: found {found}; expected at least one message",
                )
            )
            continue
        roles: list[str] = []
        for position, message in enumerate(messages):
            if type(message) is not dict:
                issues.append(
                    Issue(
                        index,
                        MISSING_MESSAGES,
                        ERROR,
                        f"messages[{position}]: not an object with role and content",
                    )
                )
                continue
            if not message.keys() <= ALLOWED_KEYS:
                for key in message.keys() - ALLOWED_KEYS:
                    issues.append(
                        Issue(
                            index,
                            UNKNOWN_KEY,
                            ERROR,
                            f"messages[{position}].{key}: unknown key {key!r}; a message may "
                            f"only have {_KEY_LIST}",
                        )
                    )
            role = message.get("role")
            if type(role) is str and role in ALLOWED_ROLES:
                roles.append(role)
            else:
                described = "missing" if role is None else repr(role)
                issues.append(
                    Issue(
                        index,
                        UNKNOWN_ROLE,
                        ERROR,
                        f"messages[{position}].role: role {described} is not one of {_ROLE_LIST}",
                    )
                )
            content = message.get("content")
            if type(content) is not str or not content or content.isspace():
                described = (
                    "an empty string"
                    if content == ""
                    else "only whitespace"
                    if isinstance(content, str)
                    else "no text"
                )
                issues.append(
                    Issue(
                        index,
                        EMPTY_CONTENT,
                        ERROR,
                        f"messages[{position}].content: found {described}; expected text",
                    )
                )
        last = messages[-1]
        last_role = last.get("role") if isinstance(last, dict) else None
        if last_role != "assistant":
            issues.append(
                Issue(
                    index,
                    NO_ASSISTANT_ANSWER,
                    ERROR,
                    f"messages[{len(messages) - 1}].role: the last message is "
                    f"{last_role!r}; the conversation must end with the assistant's answer",
                )
            )
        if len(roles) == len(messages):
            key = tuple(roles)
            if key not in order_cache:
                order_cache[key] = role_order_problem(key)
            problem = order_cache[key]
            if problem is not None:
                position, expected = problem
                issues.append(
                    Issue(
                        index,
                        ROLE_ORDER,
                        order_severity,
                        f"messages[{position}].role: found {roles[position]!r} where "
                        f"{expected!r} was expected; after an optional system message, user "
                        "and assistant must alternate",
                    )
                )
    if total_tokens is not None and context_window:
        for index in np.flatnonzero(total_tokens > context_window).tolist():
            issues.append(
                Issue(
                    index,
                    OVER_CONTEXT,
                    ERROR,
                    f"messages: {int(total_tokens[index])} tokens, over the base model's "
                    f"context length of {context_window}; it would be cut off in training",
                )
            )
    return issues
