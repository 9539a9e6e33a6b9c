"""Line-level checks of chat fine-tuning data, shared by the streaming parsers in formats.py.

A chat line is one JSON object ``{"messages": [{"role": ..., "content": ...}, ...]}``. The checks
never stop at the first problem: a reviewer fixing an uploaded file wants every broken line at
once, each with its line number and the path of the field that is wrong.

Plain Python on purpose (no Django), so importers, the API and command-line tools share it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

ALLOWED_ROLES = ("system", "user", "assistant")
REQUIRED_MESSAGE_KEYS = ("role", "content")
OPTIONAL_MESSAGE_KEYS = ("name", "weight")
# OpenAI accepts weight 0 (do not train on this turn) or 1 (train on it), on assistant turns only.
ALLOWED_WEIGHTS = (0, 1)

UTF8_BOM = b"\xef\xbb\xbf"

# Records one problem on the line being parsed: (field path, message).
Fail = Callable[[str, str], None]


@dataclass(frozen=True)
class LineError:
    """One problem in the file: ``line`` is 1-based (0 for the whole file).

    ``field`` is a path such as ``messages[2].role``, or "" when the whole line is at fault.
    """

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(
            part for part in (f"line {self.line}" if self.line else "", self.field) if part
        )
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class ParsedExample:
    """One valid conversation.

    ``messages`` hold only string values (role, content and name when given), the shape the
    providers take. A message's optional numeric ``weight`` lives in ``weights``, keyed by the
    message's index, so it is not lost for providers that honour it.
    """

    line: int
    messages: list[dict[str, str]]
    weights: dict[int, int] = field(default_factory=dict)
    # Free-form key/value pairs from the source: a JSONL line's "metadata" object, CSV columns.
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseReport:
    filename: str
    examples: list[ParsedExample]
    errors: list[LineError]
    # Errors beyond max_errors are counted, not kept, so a huge broken file stays cheap to show.
    omitted_error_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.examples)

    def summary(self) -> str:
        examples = plural(len(self.examples), "valid example")
        if not self.errors:
            return f"{self.filename}: {examples}, no errors"
        # The "more omitted" marker is not a problem of its own, so it is not counted as one.
        shown = len(self.errors) - (1 if self.omitted_error_count else 0)
        errors = plural(shown + self.omitted_error_count, "error")
        return f"{self.filename}: {examples}, {errors}; first: {self.errors[0]}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class ErrorCollector:
    """Keeps the first ``limit`` errors and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: list[LineError] = []
        self.omitted = 0
        self.first_omitted_line = 0

    def extend(self, errors: list[LineError]) -> None:
        for error in errors:
            if len(self.kept) < self.limit:
                self.kept.append(error)
                continue
            if not self.omitted:
                self.first_omitted_line = error.line
            self.omitted += 1

    def finish(self) -> list[LineError]:
        if not self.omitted:
            return self.kept
        marker = LineError(
            self.first_omitted_line,
            "",
            f"{plural(self.omitted, 'more error')} omitted"
            f" (only the first {self.limit} are listed)",
        )
        return [*self.kept, marker]


def check_chat_messages(
    record: dict[str, object], fail: Fail
) -> tuple[list[dict[str, str]], dict[int, int]] | None:
    """Validate an OpenAI chat record's messages; return (messages, weights) when all are valid.

    Every problem goes through ``fail``; None means at least one was recorded.
    """
    raw_messages = _messages_list(record, fail)
    if raw_messages is None:
        return None
    failures = FailureCounter(fail)
    messages: list[dict[str, str]] = []
    weights: dict[int, int] = {}
    for index, raw_message in enumerate(raw_messages):
        message = _check_message(index, raw_message, failures)
        if message is None:
            continue
        messages.append(message)
        weight = _valid_weight(raw_message)
        if weight is not None:
            weights[index] = weight

    # Shape rules talk about roles, so they run only when every role is valid; otherwise one
    # bad role would also show up as confusing follow-on shape errors.
    roles = [_valid_role(raw_message) for raw_message in raw_messages]
    if None not in roles:
        _check_conversation_shape([role for role in roles if role is not None], failures)
    if failures.count:
        return None
    return messages, weights


def decode_line(raw_line: bytes, fail: Fail) -> str | None:
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_byte = raw_line[error.start]
        fail("", f"line is not valid UTF-8 (byte 0x{bad_byte:02x} at column {error.start + 1})")
        return None


def load_json_object(
    text: str, fail: Fail, *, expected: str = 'an object with a "messages" key'
) -> dict[str, object] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        fail(
            "",
            f"invalid JSON: {error.msg} at column {error.colno};"
            " expected one JSON object on each line",
        )
        return None
    except RecursionError:
        # json raises this rather than JSONDecodeError for absurdly deep nesting.
        fail("", "invalid JSON: nested too deeply; expected one JSON object on each line")
        return None
    if not isinstance(value, dict):
        fail("", f"found {describe(value)}; expected {expected}")
        return None
    return value


def _messages_list(record: dict[str, object], fail: Fail) -> list[object] | None:
    if "messages" not in record:
        fail("messages", 'missing key "messages"; expected a list of messages')
        return None
    raw_messages = record["messages"]
    if not isinstance(raw_messages, list):
        fail("messages", f"found {describe(raw_messages)}; expected a list of messages")
        return None
    if not raw_messages:
        fail("messages", "found an empty list; expected at least one message")
        return None
    return raw_messages


def _check_message(index: int, raw: object, fail: Fail) -> dict[str, str] | None:
    """Return the message's string fields if it is valid, else record why and return None."""
    path = f"messages[{index}]"
    if not isinstance(raw, dict):
        fail(path, f"found {describe(raw)}; expected an object with role and content")
        return None

    counted_fail = FailureCounter(fail)
    role = _check_role(path, raw, counted_fail)
    content = _check_content(path, raw, counted_fail)
    _check_optional_keys(path, raw, role, counted_fail)
    if counted_fail.count or role is None or content is None:
        return None
    message = {"role": role, "content": content}
    name = raw.get("name")
    if isinstance(name, str):
        message["name"] = name
    return message


def _valid_role(raw: object) -> str | None:
    role = raw.get("role") if isinstance(raw, dict) else None
    return role if isinstance(role, str) and role in ALLOWED_ROLES else None


def _valid_weight(raw: object) -> int | None:
    weight = raw.get("weight") if isinstance(raw, dict) else None
    return weight if _is_allowed_weight(weight) else None


def _is_allowed_weight(weight: object) -> bool:
    # type() rather than isinstance(): JSON true/false decode to bool, a subclass of int, and
    # 1.0 would compare equal to 1.
    return type(weight) is int and weight in ALLOWED_WEIGHTS


class FailureCounter:
    """Wraps a fail callback and counts how many problems went through it."""

    def __init__(self, fail: Fail) -> None:
        self._fail = fail
        self.count = 0

    def __call__(self, field_path: str, message: str) -> None:
        self.count += 1
        self._fail(field_path, message)


def _check_role(path: str, raw: dict[str, object], fail: Fail) -> str | None:
    allowed = ", ".join(ALLOWED_ROLES)
    if "role" not in raw:
        fail(f"{path}.role", f'missing key "role"; expected one of: {allowed}')
        return None
    role = raw["role"]
    if not isinstance(role, str):
        fail(f"{path}.role", f"found {describe(role)}; expected one of: {allowed}")
        return None
    if role not in ALLOWED_ROLES:
        fail(f"{path}.role", f"role {role!r} is not allowed; expected one of: {allowed}")
        return None
    return role


def _check_content(path: str, raw: dict[str, object], fail: Fail) -> str | None:
    if "content" not in raw:
        fail(f"{path}.content", 'missing key "content"; expected a non-empty string')
        return None
    content = raw["content"]
    if not isinstance(content, str):
        fail(f"{path}.content", f"found {describe(content)}; expected a non-empty string")
        return None
    if not content.strip():
        described = "an empty string" if not content else "only whitespace"
        fail(f"{path}.content", f"found {described}; expected a non-empty string")
        return None
    return content


def _check_optional_keys(path: str, raw: dict[str, object], role: str | None, fail: Fail) -> None:
    known = (*REQUIRED_MESSAGE_KEYS, *OPTIONAL_MESSAGE_KEYS)
    for key in raw:
        if key not in known:
            fail(
                f"{path}.{key}",
                f"unknown key {key!r}; a message may only have: {', '.join(known)}",
            )
    if "name" in raw and not isinstance(raw["name"], str):
        fail(f"{path}.name", f"found {describe(raw['name'])}; expected a string")
    if "weight" in raw:
        _check_weight(path, raw["weight"], role, fail)


def _check_weight(path: str, weight: object, role: str | None, fail: Fail) -> None:
    if not _is_allowed_weight(weight):
        fail(f"{path}.weight", f"found {describe(weight)}; expected 0 or 1")
    elif role is not None and role != "assistant":
        fail(
            f"{path}.weight", f"found weight on a {role} message; only assistant messages take one"
        )


def _check_conversation_shape(roles: list[str], fail: Fail) -> None:
    for index, role in enumerate(roles):
        if role == "system" and index > 0:
            fail(
                f"messages[{index}].role",
                f"found a system message at position {index};"
                " a system message is only allowed as the first message",
            )
    if "user" not in roles:
        fail("messages", "found no user message; expected at least one")
    if roles[-1] != "assistant":
        last = len(roles) - 1
        fail(
            f"messages[{last}].role",
            f"the last message is {roles[-1]!r}; expected the conversation to end with"
            " an assistant message",
        )


def describe(value: object) -> str:
    """Say what a decoded JSON value is, in JSON's words: scalars by value, the rest by type."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown, ensure_ascii=False)}"
    # null, true/false and numbers read best exactly as they were written.
    return json.dumps(value)
