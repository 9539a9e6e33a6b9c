"""The chat JSONL parser reports every problem with its line and field, and keeps valid lines."""

from __future__ import annotations

import json

import pytest

from datasets.formats import OPENAI_CHAT, ImportOptions, parse_bytes
from datasets.jsonl import LineError, ParsedExample, ParseReport

ALLOWED_ROLES_TEXT = "expected one of: system, user, assistant"


def chat(*turns: tuple[str, str]) -> dict[str, object]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


VALID = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
ASSISTANT_TURN = {"role": "assistant", "content": "Hello"}


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def parse(data: bytes, **kwargs: int) -> ParseReport:
    return parse_bytes(
        data, filename="train.jsonl", options=ImportOptions(format=OPENAI_CHAT), **kwargs
    )


def only_error(report: ParseReport) -> LineError:
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def errors_of_line(record: object) -> list[tuple[str, str]]:
    """Parse one record placed on line 2 (after a valid line) and return (field, message)."""
    report = parse(jsonl(VALID, record))
    assert all(error.line == 2 for error in report.errors), report.errors
    assert [example.line for example in report.examples] == [1]
    return [(error.field, error.message) for error in report.errors]


# Valid files


def test_a_valid_file_with_bom_and_crlf_yields_every_example_with_its_line() -> None:
    lines = [
        json.dumps(VALID),
        json.dumps(chat(("user", "Ping"), ("assistant", "Pong"))),
        "",
        json.dumps(chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))),
    ]
    data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"

    report = parse(data)

    assert report.errors == []
    assert report.ok
    assert [example.line for example in report.examples] == [1, 2, 4]
    assert report.examples[0] == ParsedExample(
        line=1,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
    )
    assert report.examples[1].messages[1] == {"role": "assistant", "content": "Pong"}
    assert report.summary() == "train.jsonl: 3 valid examples, no errors"


def test_non_ascii_content_survives_decoding() -> None:
    record = chat(("user", "Grüße, ça va? 你好"), ("assistant", "✓"))
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode()

    report = parse(data)

    assert report.ok
    assert report.examples[0].messages[0]["content"] == "Grüße, ça va? 你好"


def test_blank_and_whitespace_only_lines_are_skipped_silently() -> None:
    data = b"\n  \n" + jsonl(VALID) + b"\t\n\n" + jsonl(VALID)

    report = parse(data)

    assert report.errors == []
    assert [example.line for example in report.examples] == [3, 6]


def test_a_last_line_without_newline_is_parsed() -> None:
    report = parse(json.dumps(VALID).encode())

    assert [example.line for example in report.examples] == [1]


def test_name_and_assistant_weight_are_kept() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi", "name": "maria"},
            {"role": "assistant", "content": "Bad answer", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Good answer", "weight": 1},
        ]
    }

    report = parse(jsonl(record))

    assert report.errors == []
    example = report.examples[0]
    assert example.messages[0] == {"role": "user", "content": "Hi", "name": "maria"}
    assert example.messages[1] == {"role": "assistant", "content": "Bad answer"}
    assert example.weights == {1: 0, 3: 1}


def test_unknown_top_level_keys_are_tolerated() -> None:
    record = {**VALID, "metadata": {"source": "crm"}}

    report = parse(jsonl(record))

    assert report.errors == []
    assert report.examples[0].messages == VALID["messages"]


# Whole-file and whole-line problems


@pytest.mark.parametrize("data", [b"", b"   \n\r\n\t", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n\n"])
def test_an_empty_file_is_one_error_on_line_0(data: bytes) -> None:
    report = parse(data)

    assert report.errors == [LineError(0, "", "file is empty")]
    assert report.examples == []
    assert not report.ok
    assert report.summary() == "train.jsonl: 0 valid examples, 1 error; first: file is empty"


def test_invalid_utf8_is_reported_for_its_line_and_other_lines_still_parse() -> None:
    bad_line = b'{"messages": "caf\xff"}\n'
    data = jsonl(VALID) + bad_line + jsonl(VALID) + b"\xc3\n"

    report = parse(data)

    assert report.errors == [
        LineError(2, "", "line is not valid UTF-8 (byte 0xff at column 18)"),
        LineError(4, "", "line is not valid UTF-8 (byte 0xc3 at column 1)"),
    ]
    assert [example.line for example in report.examples] == [1, 3]


def test_malformed_json_reports_the_json_error_and_its_column() -> None:
    data = jsonl(VALID) + b'{"messages": [}\n'

    error = only_error(parse(data))

    assert (error.line, error.field) == (2, "")
    assert error.message.startswith("invalid JSON: Expecting value at column 15;")
    assert "expected one JSON object" in error.message


def test_a_bom_in_the_middle_of_the_file_is_malformed_json() -> None:
    data = jsonl(VALID) + b"\xef\xbb\xbf" + jsonl(VALID)

    error = only_error(parse(data))

    assert (error.line, error.field) == (2, "")
    assert error.message.startswith("invalid JSON: Unexpected UTF-8 BOM")


def test_absurdly_deep_nesting_is_an_error_not_a_crash() -> None:
    data = b"[" * 100_000 + b"]" * 100_000

    error = only_error(parse(data))

    assert error == LineError(
        1, "", "invalid JSON: nested too deeply; expected one JSON object on each line"
    )


@pytest.mark.parametrize(
    ("record", "found"),
    [([VALID], "a list"), ("hello", 'the string "hello"'), (3, "3"), (None, "null")],
)
def test_a_top_level_value_that_is_not_an_object_is_rejected(record: object, found: str) -> None:
    assert errors_of_line(record) == [
        ("", f'found {found}; expected an object with a "messages" key')
    ]


# The messages list


def test_missing_messages_key() -> None:
    assert errors_of_line({"prompt": "Hi", "completion": "Hello"}) == [
        ("messages", 'missing key "messages"; expected a list of messages')
    ]


@pytest.mark.parametrize(
    ("value", "found"),
    [({"role": "user"}, "an object"), ("Hi", 'the string "Hi"'), (True, "true")],
)
def test_messages_that_is_not_a_list(value: object, found: str) -> None:
    assert errors_of_line({"messages": value}) == [
        ("messages", f"found {found}; expected a list of messages")
    ]


def test_an_empty_messages_list() -> None:
    assert errors_of_line({"messages": []}) == [
        ("messages", "found an empty list; expected at least one message")
    ]


# Each message


def test_a_message_that_is_not_an_object() -> None:
    record = {"messages": [{"role": "user", "content": "Hi"}, "Hello"]}

    assert errors_of_line(record) == [
        ("messages[1]", 'found the string "Hello"; expected an object with role and content')
    ]


def test_a_missing_role() -> None:
    record = {"messages": [{"role": "user", "content": "Hi"}, {"content": "Hello"}]}

    assert errors_of_line(record) == [
        ("messages[1].role", f'missing key "role"; {ALLOWED_ROLES_TEXT}')
    ]


def test_a_role_that_is_not_a_string() -> None:
    record = {
        "messages": [{"role": ["user"], "content": "Hi"}, {"role": "assistant", "content": "x"}]
    }

    assert errors_of_line(record) == [("messages[0].role", f"found a list; {ALLOWED_ROLES_TEXT}")]


def test_a_role_outside_the_allowed_set_names_the_allowed_roles() -> None:
    record = chat(("user", "Hi"), ("tool", "{}"), ("assistant", "Done"))

    assert errors_of_line(record) == [
        ("messages[1].role", f"role 'tool' is not allowed; {ALLOWED_ROLES_TEXT}")
    ]


def test_a_missing_content() -> None:
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant"}]}

    assert errors_of_line(record) == [
        ("messages[1].content", 'missing key "content"; expected a non-empty string')
    ]


@pytest.mark.parametrize(
    ("content", "found"),
    [(None, "null"), (42, "42"), ([{"type": "text", "text": "Hi"}], "a list")],
)
def test_content_that_is_not_a_string(content: object, found: str) -> None:
    record = {"messages": [{"role": "user", "content": content}, VALID["messages"][2]]}  # type: ignore[index]

    assert errors_of_line(record) == [
        ("messages[0].content", f"found {found}; expected a non-empty string")
    ]


@pytest.mark.parametrize(
    ("content", "found"), [("", "an empty string"), (" \n\t ", "only whitespace")]
)
def test_empty_or_whitespace_only_content(content: str, found: str) -> None:
    record = chat(("user", "Hi"), ("assistant", content))

    assert errors_of_line(record) == [
        ("messages[1].content", f"found {found}; expected a non-empty string")
    ]


def test_unknown_message_keys_are_errors_one_per_key() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi", "tool_calls": [], "extra": 1},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    allowed = "a message may only have: role, content, name, weight"

    assert errors_of_line(record) == [
        ("messages[0].tool_calls", f"unknown key 'tool_calls'; {allowed}"),
        ("messages[0].extra", f"unknown key 'extra'; {allowed}"),
    ]


def test_a_name_that_is_not_a_string() -> None:
    record = {"messages": [{"role": "user", "content": "Hi", "name": 7}, ASSISTANT_TURN]}

    assert errors_of_line(record) == [("messages[0].name", "found 7; expected a string")]


@pytest.mark.parametrize(
    ("weight", "found"), [(2, "2"), (1.0, "1.0"), (True, "true"), ("1", 'the string "1"')]
)
def test_a_weight_must_be_0_or_1(weight: object, found: str) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "weight": weight},
        ]
    }

    assert errors_of_line(record) == [("messages[1].weight", f"found {found}; expected 0 or 1")]


def test_a_weight_is_only_allowed_on_assistant_messages() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi", "weight": 1},
            {"role": "assistant", "content": "Hello"},
        ]
    }

    assert errors_of_line(record) == [
        ("messages[0].weight", "found weight on a user message; only assistant messages take one")
    ]


def test_every_problem_of_every_message_is_reported() -> None:
    record = {
        "messages": [{"role": "robot"}, {"content": " "}, {"role": "assistant", "content": "ok"}]
    }

    assert errors_of_line(record) == [
        ("messages[0].role", f"role 'robot' is not allowed; {ALLOWED_ROLES_TEXT}"),
        ("messages[0].content", 'missing key "content"; expected a non-empty string'),
        ("messages[1].role", f'missing key "role"; {ALLOWED_ROLES_TEXT}'),
        ("messages[1].content", "found only whitespace; expected a non-empty string"),
    ]


# Conversation shape


def test_a_conversation_needs_a_user_message() -> None:
    record = chat(("system", "Be brief."), ("assistant", "Hello"))

    assert errors_of_line(record) == [("messages", "found no user message; expected at least one")]


def test_the_last_message_must_be_from_the_assistant() -> None:
    record = chat(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"))

    assert errors_of_line(record) == [
        (
            "messages[2].role",
            "the last message is 'user';"
            " expected the conversation to end with an assistant message",
        )
    ]


def test_a_system_message_is_only_allowed_first() -> None:
    record = chat(("user", "Hi"), ("system", "Be brief."), ("assistant", "Hello"))

    assert errors_of_line(record) == [
        (
            "messages[1].role",
            (
                "found a system message at position 1;"
                " a system message is only allowed as the first message"
            ),
        )
    ]


def test_a_lone_system_message_breaks_every_shape_rule_at_once() -> None:
    fields = [field for field, _ in errors_of_line(chat(("system", "Be brief.")))]

    assert fields == ["messages", "messages[0].role"]


def test_shape_rules_wait_until_every_role_is_valid() -> None:
    # Without a valid role for message 1, "no user message" would be a misleading extra error.
    record = chat(("system", "Be brief."), ("usr", "Hi"), ("assistant", "Hello"))

    assert [field for field, _ in errors_of_line(record)] == ["messages[1].role"]


def test_a_line_with_any_error_yields_no_example() -> None:
    record = chat(("user", "Hi"), ("assistant", "Hello"), ("user", ""))

    report = parse(jsonl(record))

    assert report.examples == []
    assert [error.field for error in report.errors] == ["messages[2].content", "messages[2].role"]
    assert not report.ok


# The error limit


def test_errors_beyond_max_errors_are_counted_in_one_final_error() -> None:
    data = jsonl(VALID) + b"not json\n" * 5

    report = parse(data, max_errors=3)

    assert [error.line for error in report.errors] == [2, 3, 4, 5]
    assert report.errors[-1] == LineError(
        5, "", "2 more errors omitted (only the first 3 are listed)"
    )
    assert report.omitted_error_count == 2
    assert [example.line for example in report.examples] == [1]
    assert report.summary().startswith("train.jsonl: 1 valid example, 5 errors; first: line 2: ")


def test_exactly_max_errors_adds_no_omission_note() -> None:
    report = parse(b"not json\n" * 3, max_errors=3)

    assert len(report.errors) == 3
    assert report.omitted_error_count == 0


def test_a_negative_max_errors_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_errors"):
        parse(jsonl(VALID), max_errors=-1)


# Reading errors


def test_an_error_reads_as_line_field_and_message() -> None:
    assert str(LineError(3, "messages[0].role", "bad")) == "line 3, messages[0].role: bad"
    assert str(LineError(3, "", "bad")) == "line 3: bad"
    assert str(LineError(0, "", "file is empty")) == "file is empty"


def test_the_summary_names_the_first_error() -> None:
    data = jsonl(VALID) + jsonl(chat(("user", "Hi"))) + b"[]\n"

    summary = parse(data).summary()

    assert summary == (
        "train.jsonl: 1 valid example, 2 errors; first: line 2, messages[0].role:"
        " the last message is 'user'; expected the conversation to end with an assistant message"
    )
