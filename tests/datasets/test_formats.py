"""Every import format parses from a stream into the same examples, and bad input is named."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from datasets.formats import (
    ANTHROPIC,
    AUTO,
    CSV,
    OPENAI_CHAT,
    PROMPT_COMPLETION,
    CsvMapping,
    FatalInput,
    ImportOptions,
    StreamParser,
    bounded_lines,
    csv_preview,
    parse_bytes,
)
from datasets.jsonl import LineError, ParseReport

MAPPING = CsvMapping(input_column="question", output_column="answer")


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def parse(
    data: bytes,
    *,
    fmt: str = AUTO,
    filename: str = "data.jsonl",
    mapping: CsvMapping | None = None,
    max_bytes: int = 1024**3,
    max_line_bytes: int = 1024 * 1024,
) -> ParseReport:
    options = ImportOptions(
        format=fmt, csv_mapping=mapping, max_bytes=max_bytes, max_line_bytes=max_line_bytes
    )
    return parse_bytes(data, filename=filename, options=options)


def detected(data: bytes, **kwargs: object) -> str:
    parser = StreamParser(io.BytesIO(data), filename="data.jsonl", options=ImportOptions())
    list(parser.events())
    return parser.format


# --- JSONL formats -----------------------------------------------------------------------------


def test_prompt_completion_lines_become_user_and_assistant_turns() -> None:
    report = parse(jsonl({"prompt": "2+2?", "completion": " 4"}))

    assert report.errors == []
    assert report.examples[0].messages == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": " 4"},
    ]


def test_prompt_completion_names_the_missing_or_empty_field() -> None:
    data = jsonl({"prompt": "x", "completion": "y"}, {"prompt": "  "})

    report = parse(data, fmt=PROMPT_COMPLETION)

    assert [(e.line, e.field) for e in report.errors] == [(2, "prompt"), (2, "completion")]
    assert "only whitespace" in report.errors[0].message
    assert 'missing key "completion"' in report.errors[1].message


def test_anthropic_lines_take_the_system_prompt_and_text_blocks() -> None:
    record = {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
        ],
    }

    report = parse(jsonl(record))

    assert report.errors == []
    assert report.examples[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        (
            [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
            "messages[0].role",
            "must alternate user, assistant, starting with user",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "messages[1].role",
            "must alternate",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "messages[1].role",
            "expected 'user' or 'assistant'",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            "messages[0].content[0].type",
            '"type": "text"',
        ),
        ([{"role": "user", "content": "only a question"}], "messages[0].role", "end with"),
    ],
    ids=["starts-with-assistant", "two-users", "system-in-messages", "image-block", "no-answer"],
)
def test_anthropic_shape_problems_name_the_field(messages: list, field: str, reason: str) -> None:
    report = parse(jsonl({"messages": messages}), fmt=ANTHROPIC)

    assert report.examples == []
    assert any(e.field == field and reason in e.message for e in report.errors), report.errors


def test_the_format_is_detected_from_the_first_non_blank_line() -> None:
    openai = jsonl({"messages": [{"role": "user", "content": "a"}]})
    assert detected(b"\n\n" + jsonl({"prompt": "a", "completion": "b"})) == PROMPT_COMPLETION
    assert detected(jsonl({"system": "s", "messages": []})) == ANTHROPIC
    assert detected(jsonl({"messages": [{"role": "user", "content": [{"type": "text"}]}]})) == (
        ANTHROPIC
    )
    assert detected(openai) == OPENAI_CHAT


def test_an_explicit_format_overrides_detection() -> None:
    data = jsonl({"prompt": "a", "completion": "b"})

    report = parse(data, fmt=OPENAI_CHAT)

    assert report.examples == []
    assert report.errors[0].field == "messages"


def test_a_top_level_metadata_object_is_kept_and_a_non_object_is_an_error() -> None:
    good = {"prompt": "a", "completion": "b", "metadata": {"source": "crm", "n": 3}}
    bad = {"prompt": "a", "completion": "b", "metadata": "crm"}

    report = parse(jsonl(good, bad))

    assert report.examples[0].metadata == {"source": "crm", "n": 3}
    assert [(e.line, e.field) for e in report.errors] == [(2, "metadata")]


# --- bad input ---------------------------------------------------------------------------------


def test_bom_and_crlf_are_accepted() -> None:
    lines = [b'{"prompt": "a", "completion": "b"}', b'{"prompt": "c", "completion": "d"}']
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n"

    report = parse(data)

    assert report.errors == []
    assert [e.line for e in report.examples] == [1, 2]


def test_invalid_utf8_names_its_line() -> None:
    data = jsonl({"prompt": "a", "completion": "b"}) + b'{"prompt": "caf\xe9", "completion": "b"}\n'

    report = parse(data)

    assert [e.line for e in report.examples] == [1]
    assert report.errors[0].line == 2
    assert "not valid UTF-8 (byte 0xe9" in report.errors[0].message


def test_a_line_over_the_limit_is_refused_and_the_next_line_still_parses() -> None:
    long_line = json.dumps({"prompt": "x" * 5000, "completion": "y"}).encode()
    data = long_line + b"\n" + jsonl({"prompt": "a", "completion": "b"})

    report = parse(data, max_line_bytes=1000)

    assert [e.line for e in report.examples] == [2]
    [error] = report.errors
    assert error.line == 1
    assert "over the limit of 1000 bytes per line" in error.message


def test_bounded_lines_never_returns_more_than_the_limit() -> None:
    data = b"a" * 10_000 + b"\nshort\n"

    lines = list(bounded_lines(io.BytesIO(data), max_line_bytes=100))

    assert lines[1] == (2, b"short")
    assert lines[0][0] == 1 and not isinstance(lines[0][1], bytes)


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_one_error(data: bytes) -> None:
    report = parse(data, fmt=PROMPT_COMPLETION)

    assert report.errors == [LineError(0, "", "file is empty")]


# --- CSV ---------------------------------------------------------------------------------------


CSV_DATA = (
    b"question,answer,system,team\r\n"
    b"Printer jammed,hardware,Classify.,ops\r\n"
    b'"Cannot log in,\nagain",account,,it\r\n'
)


def test_csv_rows_become_examples_with_the_chosen_columns_and_metadata() -> None:
    mapping = CsvMapping(
        input_column="question",
        output_column="answer",
        system_column="system",
        metadata_columns=("team",),
    )

    report = parse(CSV_DATA, filename="t.csv", mapping=mapping)

    assert report.errors == []
    first, second = report.examples
    assert first.line == 2
    assert first.messages == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "Printer jammed"},
        {"role": "assistant", "content": "hardware"},
    ]
    assert first.metadata == {"team": "ops"}
    # A quoted cell spanning two lines: the row is numbered by the line it starts on.
    assert second.line == 3
    assert second.messages[0] == {"role": "user", "content": "Cannot log in,\nagain"}


def test_a_fixed_system_prompt_goes_on_every_row() -> None:
    mapping = CsvMapping(input_column="question", output_column="answer", system_prompt="Be terse.")

    report = parse(CSV_DATA, fmt=CSV, mapping=mapping)

    assert {e.messages[0]["content"] for e in report.examples} == {"Be terse."}


def test_csv_rows_with_missing_or_extra_columns_are_named() -> None:
    data = b"question,answer\nok,fine\nonly one\na,b,c\n"

    report = parse(data, filename="t.csv", mapping=MAPPING)

    assert [e.line for e in report.examples] == [2]
    assert [(e.line, e.message) for e in report.errors] == [
        (3, "row 3 has 1 field, the header has 2"),
        (4, "row 4 has 3 fields, the header has 2"),
    ]


def test_an_empty_csv_cell_names_its_column() -> None:
    report = parse(b"question,answer\nhello,\n", filename="t.csv", mapping=MAPPING)

    [error] = report.errors
    assert (error.line, error.field) == (2, "answer")


def test_a_mapping_naming_a_missing_column_is_refused() -> None:
    mapping = CsvMapping(input_column="question", output_column="reply")

    report = parse(b"question,answer\na,b\n", filename="t.csv", mapping=mapping)

    assert report.examples == []
    [error] = report.errors
    assert error.field == "output_column"
    assert "'reply' is not in the header" in error.message


def test_invalid_utf8_in_a_csv_stops_with_its_line() -> None:
    report = parse(b"question,answer\na,b\ncaf\xe9,c\n", filename="t.csv", mapping=MAPPING)

    assert "line 3 is not valid UTF-8" in report.errors[-1].message


def test_the_preview_shows_the_header_and_first_rows() -> None:
    header, rows = csv_preview(io.BytesIO(CSV_DATA), filename="t.csv", rows=1)

    assert header == ["question", "answer", "system", "team"]
    assert rows == [["Printer jammed", "hardware", "Classify.", "ops"]]


def test_a_csv_header_naming_a_column_twice_is_refused() -> None:
    with pytest.raises(FatalInput, match="twice"):
        csv_preview(io.BytesIO(b"a,a\n1,2\n"), filename="t.csv")


# --- compressed uploads ------------------------------------------------------------------------


LINES = jsonl(*({"prompt": f"q{n}", "completion": f"a{n}"} for n in range(3)))


def test_a_gzip_upload_is_read_through() -> None:
    report = parse(gzip.compress(LINES), filename="data.jsonl.gz")

    assert report.errors == []
    assert len(report.examples) == 3


def test_a_zip_with_one_member_is_read_and_its_name_picks_csv() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner/tickets.csv", b"question,answer\nq,a\n")

    report = parse(buffer.getvalue(), filename="upload.zip", mapping=MAPPING)

    assert report.errors == []
    assert report.examples[0].messages[1] == {"role": "assistant", "content": "a"}


def test_a_zip_with_two_files_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.jsonl", LINES)
        archive.writestr("b.jsonl", LINES)

    report = parse(buffer.getvalue(), filename="two.zip")

    assert report.errors == [LineError(0, "", "the zip file holds 2 files; expected exactly one")]


def test_a_gzip_expanding_past_the_limit_stops_with_a_clear_error() -> None:
    bomb = gzip.compress(LINES * 10_000)  # ~1 MB of text in a few KB

    report = parse(bomb, filename="bomb.jsonl.gz", max_bytes=100_000)

    assert report.errors[-1].message.startswith("the gzip file expands to more than 100000 bytes")
    assert "archive bomb" in report.errors[-1].message
    assert report.errors[-1].line > 0


def test_a_zip_member_declaring_a_size_over_the_limit_is_refused_before_reading() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.jsonl", b"\n" * 200_000)

    report = parse(buffer.getvalue(), filename="big.zip", max_bytes=1000)

    assert "over the import limit of 1000 bytes" in report.errors[0].message


def test_an_extreme_expansion_ratio_is_refused_under_the_size_limit() -> None:
    # 40 MB of blank lines compress to about 40 KB.
    bomb = gzip.compress((b" " * 100_000 + b"\n") * 400)

    report = parse(bomb, filename="ratio.jsonl.gz")

    assert "expands more than 1000 times" in report.errors[-1].message


def test_a_truncated_gzip_is_a_clear_error() -> None:
    report = parse(gzip.compress(LINES)[:-12], filename="cut.jsonl.gz")

    assert "corrupt or truncated" in report.errors[-1].message


def test_a_nul_character_is_refused_naming_the_field() -> None:
    data = jsonl(
        {"prompt": "a\u0000b", "completion": "c"},
        {"prompt": "a", "completion": "c", "metadata": {"k": "x\u0000"}},
    )

    report = parse(data)

    assert [(e.line, e.field) for e in report.errors] == [
        (1, "messages[0].content"),
        (2, "metadata"),
    ]
    assert "NUL character" in report.errors[0].message


# --- spreadsheets ------------------------------------------------------------------------------


def xlsx(rows: list[list[object]]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_an_xlsx_sheet_imports_like_a_csv() -> None:
    data = xlsx(
        [
            ["question", "answer", "team"],
            ["Printer jammed", "hardware", None],
            [None, None, None],
            ["VPN down", "network", 7],
        ]
    )
    mapping = CsvMapping(
        input_column="question", output_column="answer", metadata_columns=("team",)
    )

    report = parse(data, filename="tickets.xlsx", mapping=mapping)

    assert report.errors == []
    assert [e.line for e in report.examples] == [2, 4]
    assert report.examples[0].metadata == {"team": ""}
    assert report.examples[1].messages[1] == {"role": "assistant", "content": "network"}
    assert report.examples[1].metadata == {"team": "7"}
    header, rows = csv_preview(io.BytesIO(data), filename="tickets.xlsx")
    assert header == ["question", "answer", "team"]
    assert rows[0] == ["Printer jammed", "hardware"]


def test_an_xlsx_row_wider_than_the_header_is_named() -> None:
    data = xlsx([["question", "answer"], ["a", "b", "stray"]])

    report = parse(data, filename="t.xlsx", mapping=MAPPING)

    assert [(e.line, e.message) for e in report.errors] == [
        (2, "row 2 has 3 fields, the header has 2")
    ]


def test_a_file_named_xlsx_that_is_not_one_is_a_clear_error() -> None:
    report = parse(b"question,answer\n", filename="t.xlsx", mapping=MAPPING)

    assert "the spreadsheet cannot be read" in report.errors[0].message


def test_the_default_line_limit_is_one_megabyte() -> None:
    huge = json.dumps({"prompt": "x" * (1024 * 1024), "completion": "y"}).encode()
    data = jsonl({"prompt": "a", "completion": "b"}) + huge + b"\r\n"

    report = parse(data)

    assert [e.line for e in report.examples] == [1]
    [error] = report.errors
    assert error.line == 2
    assert "over the limit of 1048576 bytes per line" in error.message
