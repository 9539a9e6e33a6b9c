"""Fuzzing every parser: any bytes give a report (never an exception), line numbers stay in
range, and valid examples written by the exporters parse back unchanged."""

from __future__ import annotations

import gzip
import io
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.formats import (
    ANTHROPIC,
    AUTO,
    CSV,
    CSV_EXPORT_HEADER,
    OPENAI_CHAT,
    PROMPT_COMPLETION,
    CsvMapping,
    ImportOptions,
    csv_line,
    export_line,
    parse_bytes,
)
from datasets.jsonl import ParseReport

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAPPING = CsvMapping(input_column="input", output_column="ideal_output", system_column="system")
ALL_OPTIONS = [
    ImportOptions(format=AUTO),
    ImportOptions(format=OPENAI_CHAT),
    ImportOptions(format=PROMPT_COMPLETION),
    ImportOptions(format=ANTHROPIC),
    ImportOptions(format=CSV, csv_mapping=MAPPING),
]

# Bytes that look a little like the formats, so the fuzzer gets past the first checks often.
FRAGMENTS = [
    b"\n",
    b"\r\n",
    b"\xef\xbb\xbf",
    b'{"messages": [',
    b'{"role": "user", "content": "hi"}',
    b'{"role": "assistant", "content": [{"type": "text", "text": "yo"}]}',
    b'{"prompt": "a", "completion": "b"}',
    b'"system": "s",',
    b'"metadata": {"k": 1}',
    b"]}",
    b",",
    b'"',
    b"input,ideal_output,system\n",
    b"\xff",
    b"\xc3",
    b"\x00",
]
fuzzy_bytes = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=60).map(b"".join),
)


def parse(data: bytes, options: ImportOptions, filename: str = "fuzz.jsonl") -> ParseReport:
    return parse_bytes(data, filename=filename, options=options)


def assert_lines_in_range(report: ParseReport, data: bytes) -> None:
    line_count = data.count(b"\n") + 1
    for error in report.errors:
        assert 0 <= error.line <= line_count, error
        assert error.message
    for example in report.examples:
        assert 1 <= example.line <= line_count
        assert example.messages[-1]["role"] == "assistant"
    assert report.examples or report.errors


@FUZZ
@given(data=fuzzy_bytes, options=st.sampled_from(ALL_OPTIONS))
def test_arbitrary_bytes_give_a_report_with_lines_in_range(
    data: bytes, options: ImportOptions
) -> None:
    report = parse(data, options)

    assert_lines_in_range(report, data)


@FUZZ
@given(data=fuzzy_bytes, options=st.sampled_from(ALL_OPTIONS))
def test_arbitrary_bytes_inside_gzip_or_zip_give_a_report(
    data: bytes, options: ImportOptions
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner.jsonl", data)

    for packed in (gzip.compress(data), buffer.getvalue()):
        report = parse(packed, options, filename="fuzz.gz")
        assert report.examples or report.errors


@FUZZ
@given(data=st.binary(max_size=300))
def test_truncated_or_garbled_archives_give_a_report(data: bytes) -> None:
    for packed in (b"\x1f\x8b" + data, b"PK\x03\x04" + data, gzip.compress(data)[: len(data)]):
        report = parse(packed, ImportOptions())
        assert report.errors or report.examples


@FUZZ
@given(data=fuzzy_bytes)
def test_arbitrary_bytes_named_xlsx_give_a_report(data: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/worksheets/sheet1.xml", data)
        archive.writestr("[Content_Types].xml", data[:50])

    for packed in (data, buffer.getvalue()):
        report = parse(packed, ALL_OPTIONS[-1], filename="fuzz.xlsx")
        assert report.errors or report.examples


# --- round trip: export, then parse --------------------------------------------------------------

# NUL is refused on purpose (the database cannot store it), so valid text leaves it out.
text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=40
).filter(lambda value: value.strip() != "")


@st.composite
def conversations(draw: st.DrawFn, *, turns: int, system: bool, weights: bool) -> list[dict]:
    messages: list[dict] = []
    if system and draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    for _ in range(draw(st.integers(1, turns))):
        messages.append({"role": "user", "content": draw(text)})
        answer: dict = {"role": "assistant", "content": draw(text)}
        if weights and draw(st.booleans()):
            answer["weight"] = draw(st.sampled_from([0, 1]))
        messages.append(answer)
    return messages


def round_trip(fmt: str, examples: list[list[dict]], options: ImportOptions) -> ParseReport:
    lines = [csv_line(CSV_EXPORT_HEADER)] if fmt == CSV else []
    lines += [export_line(fmt, messages, "train") for messages in examples]
    return parse("".join(lines).encode(), options, filename=f"export.{fmt}")


def with_weights(report: ParseReport) -> list[list[dict]]:
    return [
        [
            {**message, "weight": example.weights[i]} if i in example.weights else message
            for i, message in enumerate(example.messages)
        ]
        for example in report.examples
    ]


@FUZZ
@given(examples=st.lists(conversations(turns=3, system=True, weights=True), min_size=1, max_size=5))
def test_openai_chat_round_trips(examples: list[list[dict]]) -> None:
    report = round_trip(OPENAI_CHAT, examples, ImportOptions(format=AUTO))

    assert report.errors == []
    assert with_weights(report) == examples


@FUZZ
@given(
    examples=st.lists(conversations(turns=3, system=True, weights=False), min_size=1, max_size=5)
)
def test_anthropic_round_trips(examples: list[list[dict]]) -> None:
    report = round_trip(ANTHROPIC, examples, ImportOptions(format=ANTHROPIC))

    assert report.errors == []
    assert [example.messages for example in report.examples] == examples


@FUZZ
@given(
    examples=st.lists(conversations(turns=1, system=False, weights=False), min_size=1, max_size=5)
)
def test_prompt_completion_round_trips(examples: list[list[dict]]) -> None:
    report = round_trip(PROMPT_COMPLETION, examples, ImportOptions(format=AUTO))

    assert report.errors == []
    assert [example.messages for example in report.examples] == examples


@FUZZ
@given(
    examples=st.lists(conversations(turns=1, system=True, weights=False), min_size=1, max_size=5)
)
def test_csv_round_trips(examples: list[list[dict]]) -> None:
    report = round_trip(CSV, examples, ImportOptions(format=CSV, csv_mapping=MAPPING))

    assert report.errors == []
    assert [example.messages for example in report.examples] == examples
