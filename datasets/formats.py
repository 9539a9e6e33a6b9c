"""Streaming parsers and writers for every training-data format the portal speaks.

Each parser reads a binary file object one bounded line (or CSV row) at a time, so a 1 GB file
costs no more memory than its longest line, and turns it into the same ``ParsedExample`` (chat
messages, weights, metadata) or ``LineError`` (line, field, message). Problems that make the rest
of the file unreadable (an archive bomb, a broken gzip stream, a CSV line over the limit) end the
parse with one fatal error; everything else is reported per line and the parse goes on.

Formats:
- OpenAI chat JSONL: ``{"messages": [{"role", "content"[, "name"][, "weight"]}, ...]}``
- legacy prompt/completion JSONL: ``{"prompt": str, "completion": str}``
- Anthropic / Bedrock JSONL: ``{"system"?: str, "messages": [{"role": "user"|"assistant",
  "content": str | [{"type": "text", "text": str}]}]}``, alternating and starting with user
- CSV with a column mapping (input, ideal output, optional system column or fixed prompt,
  metadata columns)
Any JSONL line may carry a top-level ``"metadata"`` object. Uploads may be gzip or a zip with one
member; both are read through a guard that stops once they expand past the import limit or
ratio. Bytes do not bound the work on their own, so ``WorkMeter`` also caps lines (blank ones
count), cells per row and in all, and time, and names the cap that ended a parse.

Plain Python on purpose (no Django): importers, the API, tests and benchmarks share it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol
from xml.etree import ElementTree

from .jsonl import (
    UTF8_BOM,
    ErrorCollector,
    Fail,
    FailureCounter,
    LineError,
    ParsedExample,
    ParseReport,
    check_chat_messages,
    decode_line,
    describe,
    load_json_object,
    plural,
)

OPENAI_CHAT = "openai_chat"
PROMPT_COMPLETION = "prompt_completion"
ANTHROPIC = "anthropic"
CSV = "csv"
AUTO = "auto"
JSONL_FORMATS = (OPENAI_CHAT, PROMPT_COMPLETION, ANTHROPIC)
ALL_FORMATS = (*JSONL_FORMATS, CSV)

# A single line longer than this is refused: no sane training example is, and reading it whole
# is how one malicious line would blow the worker's memory.
MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_BYTES = 1024**3
# Real JSONL compresses 5 to 50 times; a stream expanding by more than this is treated as a bomb
# once it has produced enough output for the ratio to mean something.
MAX_EXPANSION_RATIO = 1000
RATIO_CHECK_AFTER_BYTES = 16 * 1024 * 1024
SKIP_CHUNK_BYTES = 64 * 1024
# Work limits (the defaults; the app passes its settings). Bytes alone do not bound the work: a
# gzip of a gigabyte of newlines is a billion empty lines, and a small spreadsheet may hold
# millions of empty cells, so lines (blank ones included), cells and time are capped as well.
DEFAULT_MAX_LINES = 2_000_000
DEFAULT_MAX_CELLS_PER_ROW = 1024
DEFAULT_MAX_CELLS = 20_000_000

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


class BinaryReader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class FatalInput(Exception):
    """The rest of the input cannot be read; ``message`` says why, for the user."""

    def __init__(self, message: str, *, field_path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field_path = field_path


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV columns make an example. Column names as they appear in the header row."""

    input_column: str
    output_column: str
    system_column: str = ""
    system_prompt: str = ""
    metadata_columns: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, object]) -> CsvMapping:
        columns = options.get("metadata_columns") or []
        return cls(
            input_column=str(options.get("input_column") or ""),
            output_column=str(options.get("output_column") or ""),
            system_column=str(options.get("system_column") or ""),
            system_prompt=str(options.get("system_prompt") or ""),
            metadata_columns=tuple(str(c) for c in columns) if isinstance(columns, list) else (),
        )

    def as_options(self) -> dict[str, object]:
        return {
            "input_column": self.input_column,
            "output_column": self.output_column,
            "system_column": self.system_column,
            "system_prompt": self.system_prompt,
            "metadata_columns": list(self.metadata_columns),
        }


@dataclass(frozen=True)
class ImportOptions:
    format: str = AUTO
    csv_mapping: CsvMapping | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    max_lines: int = DEFAULT_MAX_LINES
    max_cells_per_row: int = DEFAULT_MAX_CELLS_PER_ROW
    max_cells: int = DEFAULT_MAX_CELLS
    max_expansion_ratio: int = MAX_EXPANSION_RATIO
    # Seconds the whole parse may take; None = no budget (tools and tests over data in memory).
    time_budget_s: float | None = None


class WorkMeter:
    """Counts the work one parse does and ends it, with the limit named, once a cap is passed.

    Checked on every line or row (blank ones too) and on every spreadsheet cell before the row
    is built, so no input makes the parser work or allocate past the caps.
    """

    def __init__(self, options: ImportOptions) -> None:
        self.options = options
        self.cells = 0
        self.at = 0  # the line or row being read, for the error
        self._deadline = (
            time.monotonic() + options.time_budget_s if options.time_budget_s is not None else None
        )

    def line(self, number: int) -> None:
        self.at = number
        if number > self.options.max_lines:
            raise FatalInput(
                f"the file has more than {self.options.max_lines} lines (blank lines count),"
                " the limit of one import; split it into smaller files"
            )
        self.check_time()

    def check_time(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise FatalInput(
                f"reading the file took longer than its time budget of"
                f" {self.options.time_budget_s:g} s; split it into smaller files"
            )

    def row_cells(self, row: int, width: int) -> None:
        """A row of ``width`` cells so far (gaps count: a cell in column XFD makes 16384)."""
        self.at = row
        if width > self.options.max_cells_per_row:
            raise FatalInput(
                f"row {row} has more than {self.options.max_cells_per_row} cells, the limit"
                " per row; keep only the columns the examples need"
            )

    def add_cells(self, row: int, count: int) -> None:
        self.cells += count
        if self.cells > self.options.max_cells:
            raise FatalInput(
                f"the file has more than {self.options.max_cells} cells by row {row}, the limit"
                " of one import; split it into smaller files"
            )


def check_csv_mapping(mapping: CsvMapping, header: list[str]) -> None:
    """Refuse a mapping that names columns the file does not have."""
    chosen = {
        "input_column": mapping.input_column,
        "output_column": mapping.output_column,
        "system_column": mapping.system_column,
    }
    for option, column in chosen.items():
        if option != "system_column" and not column:
            raise FatalInput(f"choose the {option.replace('_', ' ')}", field_path=option)
        if column and column not in header:
            raise FatalInput(
                f"column {column!r} is not in the header ({', '.join(header)})", field_path=option
            )
    if mapping.input_column == mapping.output_column:
        raise FatalInput(
            "the input and the ideal output must be different columns", field_path="output_column"
        )
    for column in mapping.metadata_columns:
        if column not in header:
            raise FatalInput(
                f"metadata column {column!r} is not in the header", field_path="metadata_columns"
            )


# --- reading bounded lines from (possibly compressed) input ---------------------------------


class _CountingReader(io.RawIOBase):
    """The compressed input as the decompressor reads it, counting the bytes it consumed.

    The expansion ratio is taken on these, not on the file's size or the archive's declared
    sizes, which a crafted file can make say anything.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self.consumed += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


class _ExpansionGuard:
    """Wraps a decompressing reader; stops once the output outgrows the limit or the ratio."""

    def __init__(
        self,
        inner: BinaryReader,
        *,
        compressed: _CountingReader,
        max_bytes: int,
        max_ratio: int,
        what: str,
    ) -> None:
        self._inner = inner
        self._compressed = compressed
        self._max_bytes = max_bytes
        self._max_ratio = max_ratio
        self._what = what
        self.produced = 0

    def readline(self, size: int = -1, /) -> bytes:
        try:
            line = self._inner.readline(size)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
            raise FatalInput(f"the {self._what} is corrupt or truncated ({error})")
        self.produced += len(line)
        if self.produced > self._max_bytes:
            raise FatalInput(
                f"the {self._what} expands to more than {self._max_bytes} bytes, the import"
                " limit; refused as a possible archive bomb"
            )
        if self.produced > RATIO_CHECK_AFTER_BYTES:
            consumed = max(1, self._compressed.consumed)
            if self.produced / consumed > self._max_ratio:
                raise FatalInput(
                    f"the {self._what} expands more than {self._max_ratio} times;"
                    " refused as a possible archive bomb"
                )
        return line


def _position(stream: IO[bytes]) -> int:
    try:
        return stream.tell()
    except (OSError, ValueError):
        return 0


def open_decompressed(
    raw: IO[bytes], *, filename: str, max_bytes: int, max_ratio: int = MAX_EXPANSION_RATIO
) -> tuple[BinaryReader, str]:
    """Return a line reader over the plain content and the name of the file inside.

    Compression is recognised by its magic bytes, not the name, so a renamed file still works.
    """
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(GZIP_MAGIC):
        inner_name = filename[:-3] if filename.lower().endswith(".gz") else filename
        counted = _CountingReader(raw)
        stream = gzip.GzipFile(fileobj=counted, mode="rb")
        return _ExpansionGuard(
            stream, compressed=counted, max_bytes=max_bytes, max_ratio=max_ratio, what="gzip file"
        ), inner_name
    if head.startswith(ZIP_MAGIC) and not filename.lower().endswith(".xlsx"):
        counted = _CountingReader(raw)
        try:
            archive = zipfile.ZipFile(counted)
        except (zipfile.BadZipFile, OSError) as error:
            raise FatalInput(f"the zip file cannot be read ({error})")
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise FatalInput(
                f"the zip file holds {plural(len(members), 'file')}; expected exactly one"
            )
        [member] = members
        if member.file_size > max_bytes:
            raise FatalInput(
                f"{member.filename} in the zip file is {member.file_size} bytes, over the"
                f" import limit of {max_bytes} bytes"
            )
        try:
            opened = archive.open(member)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
            raise FatalInput(f"{member.filename} in the zip file cannot be read ({error})")
        return _ExpansionGuard(
            opened, compressed=counted, max_bytes=max_bytes, max_ratio=max_ratio, what="zip file"
        ), member.filename
    return raw, filename


@dataclass
class _TooLong:
    length_at_least: int


def bounded_lines(
    stream: BinaryReader, *, max_line_bytes: int = MAX_LINE_BYTES, keep_ends: bool = False
) -> Iterator[tuple[int, bytes | _TooLong]]:
    """Yield (1-based line number, line without its ending) reading at most one bounded line.

    A line over ``max_line_bytes`` is yielded as ``_TooLong`` and skipped in fixed-size chunks,
    so memory stays bounded whatever the input. A UTF-8 byte-order mark at the start is dropped.
    """
    number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        if number == 1:
            line = line.removeprefix(UTF8_BOM)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            skipped = len(line)
            while True:
                rest = stream.readline(SKIP_CHUNK_BYTES)
                skipped += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, _TooLong(skipped)
            continue
        yield number, line if keep_ends else line.removesuffix(b"\n").removesuffix(b"\r")


def _too_long_message(too_long: _TooLong, limit: int) -> str:
    return (
        f"line is {too_long.length_at_least} bytes, over the limit of {limit} bytes per line;"
        " split or shorten it"
    )


# --- JSONL formats ---------------------------------------------------------------------------


def detect_jsonl_format(record: dict[str, object]) -> str:
    """Guess the format from one decoded line (the first non-blank one)."""
    if "prompt" in record or "completion" in record:
        return PROMPT_COMPLETION
    if "system" in record:
        return ANTHROPIC
    messages = record.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                return ANTHROPIC
    return OPENAI_CHAT


def _check_metadata(record: dict[str, object], fail: Fail) -> dict[str, object]:
    if "metadata" not in record:
        return {}
    metadata = record["metadata"]
    if not isinstance(metadata, dict):
        fail("metadata", f"found {describe(metadata)}; expected an object")
        return {}
    return metadata


def _check_text(value: object, path: str, fail: Fail) -> str | None:
    if not isinstance(value, str):
        fail(path, f"found {describe(value)}; expected a non-empty string")
        return None
    if not value.strip():
        described = "an empty string" if not value else "only whitespace"
        fail(path, f"found {described}; expected a non-empty string")
        return None
    return value


def _openai_record(
    record: dict[str, object], fail: Fail
) -> tuple[list[dict[str, str]], dict[int, int]] | None:
    return check_chat_messages(record, fail)


def _prompt_completion_record(
    record: dict[str, object], fail: Fail
) -> tuple[list[dict[str, str]], dict[int, int]] | None:
    values: list[str | None] = []
    for key in ("prompt", "completion"):
        if key not in record:
            fail(key, f'missing key "{key}"; expected a non-empty string')
            values.append(None)
            continue
        values.append(_check_text(record[key], key, fail))
    prompt, completion = values
    if prompt is None or completion is None:
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], {}


ANTHROPIC_ROLES = ("user", "assistant")


def _anthropic_content(value: object, path: str, fail: Fail) -> str | None:
    """Content is a string or a list of text blocks; text blocks are joined by newlines."""
    if not isinstance(value, list):
        return _check_text(value, path, fail)
    if not value:
        fail(path, "found an empty list; expected text or a list of text blocks")
        return None
    texts: list[str] = []
    for index, block in enumerate(value):
        block_path = f"{path}[{index}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            fail(f"{block_path}.type", 'expected a block {"type": "text", "text": ...}')
            return None
        text = block.get("text")
        if not isinstance(text, str):
            fail(f"{block_path}.text", f"found {describe(text)}; expected a string")
            return None
        texts.append(text)
    return _check_text("\n".join(texts), path, fail)


def _anthropic_record(
    record: dict[str, object], fail: Fail
) -> tuple[list[dict[str, str]], dict[int, int]] | None:
    before = FailureCounter(fail)
    messages: list[dict[str, str]] = []
    if "system" in record:
        system = _check_text(record["system"], "system", before)
        if system is not None:
            messages.append({"role": "system", "content": system})
    raw_messages = record.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        found = "nothing" if "messages" not in record else describe(raw_messages)
        before("messages", f"found {found}; expected a non-empty list of messages")
        return None
    for index, raw in enumerate(raw_messages):
        path = f"messages[{index}]"
        if not isinstance(raw, dict):
            before(path, f"found {describe(raw)}; expected an object with role and content")
            continue
        for key in raw:
            if key not in ("role", "content"):
                before(f"{path}.{key}", f"unknown key {key!r}; a message has only role, content")
        role = raw.get("role")
        expected = ANTHROPIC_ROLES[index % 2]
        if role not in ANTHROPIC_ROLES:
            before(f"{path}.role", f"found {describe(role)}; expected 'user' or 'assistant'")
        elif role != expected:
            before(
                f"{path}.role",
                f"found {role!r} at position {index}; messages must alternate user, assistant,"
                " starting with user",
            )
        content = _anthropic_content(raw.get("content"), f"{path}.content", before)
        if isinstance(role, str) and content is not None:
            messages.append({"role": role, "content": content})
    if not before.count and raw_messages and messages[-1]["role"] != "assistant":
        before(
            f"messages[{len(raw_messages) - 1}].role",
            "the last message is 'user'; expected the conversation to end with an assistant"
            " message",
        )
    return None if before.count else (messages, {})


RecordParser = Callable[
    [dict[str, object], Fail], tuple[list[dict[str, str]], dict[int, int]] | None
]
RECORD_PARSERS: dict[str, RecordParser] = {
    OPENAI_CHAT: _openai_record,
    PROMPT_COMPLETION: _prompt_completion_record,
    ANTHROPIC: _anthropic_record,
}
EXPECTED_OBJECT = {
    OPENAI_CHAT: 'an object with a "messages" key',
    PROMPT_COMPLETION: 'an object with "prompt" and "completion" keys',
    ANTHROPIC: 'an object with a "messages" key',
}


# --- the parser --------------------------------------------------------------------------------

Event = ParsedExample | LineError


class StreamParser:
    """Parses one upload, yielding examples and errors; ``format`` is known after the first line.

    ``progress()`` says how many bytes of the raw (possibly compressed) input were consumed.
    """

    def __init__(self, raw: IO[bytes], *, filename: str, options: ImportOptions) -> None:
        self.raw = raw
        self.filename = filename
        self.options = options
        self.format = options.format
        self.rows = 0
        self.fatal = False
        self.meter = WorkMeter(options)

    def progress(self) -> int:
        return _position(self.raw)

    def events(self) -> Iterator[Event]:
        try:
            if is_spreadsheet(self.filename):
                self.format = CSV
                yield from self._table_events(
                    xlsx_rows(self.raw, max_bytes=self.options.max_bytes, meter=self.meter),
                    pad_short_rows=True,
                )
                return
            reader, inner_name = open_decompressed(
                self.raw,
                filename=self.filename,
                max_bytes=self.options.max_bytes,
                max_ratio=self.options.max_expansion_ratio,
            )
            if self.format == AUTO and inner_name.lower().endswith((".csv", ".tsv")):
                self.format = CSV
            if self.format == CSV:
                yield from self._table_events(
                    csv_rows(
                        reader,
                        max_line_bytes=self.options.max_line_bytes,
                        on_line=self._at,
                        meter=self.meter,
                    )
                )
            else:
                yield from self._jsonl_events(reader)
        except FatalInput as fatal:
            self.fatal = True
            yield LineError(self.rows or self.meter.at, fatal.field_path, fatal.message)

    def _jsonl_events(self, reader: BinaryReader) -> Iterator[Event]:
        seen_content = False
        limit = self.options.max_line_bytes
        for number, line in bounded_lines(reader, max_line_bytes=limit):
            self.rows = number
            self.meter.line(number)
            errors: list[LineError] = []
            fail = _collecting(number, errors)
            if isinstance(line, _TooLong):
                seen_content = True
                fail("", _too_long_message(line, limit))
                yield from errors
                continue
            text = decode_line(line, fail)
            if text is None:
                seen_content = True
                yield from errors
                continue
            if not text.strip():
                continue
            seen_content = True
            record = load_json_object(text, fail, expected=self._expected())
            if record is not None and self.format == AUTO:
                self.format = detect_jsonl_format(record)
            if record is None:
                yield from errors
                continue
            parsed = RECORD_PARSERS[self._jsonl_format()](record, fail)
            metadata = _check_metadata(record, fail)
            if parsed is None or errors:
                yield from errors
                continue
            messages, weights = parsed
            _check_storable(messages, metadata, fail)
            if errors:
                yield from errors
                continue
            yield ParsedExample(number, messages, weights, metadata)
        if not seen_content:
            yield LineError(0, "", "file is empty")

    def _jsonl_format(self) -> str:
        return self.format if self.format in JSONL_FORMATS else OPENAI_CHAT

    def _expected(self) -> str:
        return EXPECTED_OBJECT.get(self.format, EXPECTED_OBJECT[OPENAI_CHAT])

    def _table_events(
        self, rows: Iterator[tuple[int, list[str]]], *, pad_short_rows: bool = False
    ) -> Iterator[Event]:
        """Rows to examples. Spreadsheets drop trailing empty cells, so their short rows are
        padded; in a CSV a short row means a missing separator and is an error."""
        # An apostrophe the export put before a formula character is not part of the text.
        rows = ((number, [csv_cell_unguarded(cell) for cell in row]) for number, row in rows)
        header_row = next(rows, None)
        if header_row is None:
            yield LineError(0, "", "file is empty")
            return
        _, header = header_row
        check_csv_header(header)
        mapping = self.options.csv_mapping
        if mapping is None:
            raise FatalInput("choose which columns hold the input and the ideal output")
        check_csv_mapping(mapping, header)
        index = {name: position for position, name in enumerate(header)}
        seen_row = False
        for number, row in rows:
            if not any(cell.strip() for cell in row):
                continue
            seen_row = True
            if pad_short_rows and len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            if len(row) != len(header):
                yield LineError(
                    number,
                    "",
                    f"row {number} has {plural(len(row), 'field')}, the header has {len(header)}",
                )
                continue
            yield from _csv_example(number, row, index, mapping)
        if not seen_row:
            yield LineError(0, "", "file has a header but no rows")

    def _at(self, line: int) -> None:
        self.rows = line


def with_default_system_prompt(example: ParsedExample, prompt: str) -> ParsedExample:
    """``example`` with ``prompt`` as its system message when it brings no system message of
    its own; a blank ``prompt`` changes nothing. Per-message weights move with their messages."""
    if not prompt.strip() or any(m.get("role") == "system" for m in example.messages):
        return example
    return ParsedExample(
        example.line,
        [{"role": "system", "content": prompt}, *example.messages],
        {index + 1: weight for index, weight in example.weights.items()},
        example.metadata,
    )


NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it"


def _check_storable(
    messages: list[dict[str, str]], metadata: dict[str, object], fail: Fail
) -> None:
    """Postgres cannot store NUL in text or JSON; say where it is instead of failing later."""
    for index, message in enumerate(messages):
        for key, value in message.items():
            if "\x00" in value:
                fail(f"messages[{index}].{key}", NUL_MESSAGE)
    if metadata and "\\u0000" in json.dumps(metadata):
        fail("metadata", NUL_MESSAGE)


def _collecting(number: int, errors: list[LineError]) -> Fail:
    def fail(field_path: str, message: str) -> None:
        errors.append(LineError(number, field_path, message))

    return fail


def check_csv_header(header: list[str]) -> None:
    names = [name.strip() for name in header]
    if not any(names):
        raise FatalInput("the header row is empty; the first row must name the columns")
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise FatalInput(f"column {position} of the header has no name")
        if name in seen:
            raise FatalInput(f"the header names column {name!r} twice")
        seen.add(name)


def _csv_example(
    number: int, row: list[str], index: dict[str, int], mapping: CsvMapping
) -> Iterator[Event]:
    errors: list[LineError] = []
    fail = _collecting(number, errors)
    user = _check_text(row[index[mapping.input_column]], mapping.input_column, fail)
    answer = _check_text(row[index[mapping.output_column]], mapping.output_column, fail)
    system = row[index[mapping.system_column]] if mapping.system_column else mapping.system_prompt
    if errors or user is None or answer is None:
        yield from errors
        return
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if system.strip():
        messages.insert(0, {"role": "system", "content": system})
    metadata: dict[str, object] = {name: row[index[name]] for name in mapping.metadata_columns}
    _check_storable(messages, metadata, fail)
    if errors:
        yield from errors
        return
    yield ParsedExample(number, messages, {}, metadata)


def csv_rows(
    reader: BinaryReader,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_line: Callable[[int], None] | None = None,
    meter: WorkMeter | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line the row starts on, cells). Unreadable input raises ``FatalInput``.

    A broken line cannot be skipped in CSV (a quote may span lines), so it ends the parse.
    """
    meter = meter or WorkMeter(ImportOptions())
    state = {"line": 0}

    def text_lines() -> Iterator[str]:
        # Line ends stay: a quoted cell may hold a CRLF that is part of the text.
        lines = bounded_lines(reader, max_line_bytes=max_line_bytes, keep_ends=True)
        for number, line in lines:
            state["line"] = number
            if on_line is not None:
                on_line(number)
            meter.line(number)
            if isinstance(line, _TooLong):
                raise FatalInput(f"line {number}: {_too_long_message(line, max_line_bytes)}")
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise FatalInput(
                    f"line {number} is not valid UTF-8 (byte 0x{line[error.start]:02x} at"
                    f" column {error.start + 1}); save the file as UTF-8"
                )

    parsed = csv.reader(text_lines(), strict=True)
    while True:
        start = state["line"] + 1
        try:
            row = next(parsed)
        except StopIteration:
            return
        except csv.Error as error:
            raise FatalInput(f"line {state['line']}: the CSV cannot be read ({error})")
        # A row is at most one bounded line, so it is built before it is counted.
        meter.row_cells(start, len(row))
        meter.add_cells(start, len(row))
        yield start, row


# Cells may hold up to a whole line; the csv module's default cap is 128 KiB.
csv.field_size_limit(MAX_LINE_BYTES * 4)


def is_spreadsheet(filename: str) -> bool:
    return filename.lower().endswith(".xlsx")


def is_compressed(head: bytes) -> bool:
    """Whether a file's first bytes say gzip or zip (an .xlsx is a zip too)."""
    return head.startswith((GZIP_MAGIC, ZIP_MAGIC))


# Parts of an .xlsx other than its sheets and shared strings (workbook, styles, theme) are read
# whole by openpyxl; real ones are kilobytes.
MAX_XLSX_PART_BYTES = 32 * 1024 * 1024
STREAMED_XLSX_PARTS = ("xl/worksheets/", "xl/sharedstrings")


def xlsx_rows(
    raw: IO[bytes],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    meter: WorkMeter | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """The first sheet's rows as text, streamed cell by cell under the work caps.

    Trailing empty cells are dropped, since spreadsheets pad rows to the widest one. An .xlsx is
    a zip of XML files, so it gets the archive-bomb check on its declared sizes first (zipfile
    never reads a member past its declared size). openpyxl reads the workbook's structure
    (which sheet is first, date formats) and converts each cell, but the shared strings and the
    rows are read here: openpyxl's read-only mode scans a whole sheet for its dimension when it
    opens it, builds a whole row before yielding it and pads every row to the declared
    dimension, so one row of millions of cells, or a dimension claiming A1:XFD100000, would cost
    gigabytes or minutes before any check ran. The declared dimension is ignored; cells are
    counted as they stream, before a row is built.
    """
    meter = meter or WorkMeter(ImportOptions())
    try:
        infos = zipfile.ZipFile(raw).infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise FatalInput(f"the spreadsheet cannot be read; is it an .xlsx file? ({error})")
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        raise FatalInput(
            f"the spreadsheet expands to {declared} bytes, over the import limit of {max_bytes}"
            " bytes; refused as a possible archive bomb"
        )
    for info in infos:
        streamed = info.filename.lower().startswith(STREAMED_XLSX_PARTS)
        if not streamed and info.file_size > MAX_XLSX_PART_BYTES:
            raise FatalInput(
                f"the spreadsheet's part {info.filename} is {info.file_size} bytes, over the"
                f" limit of {MAX_XLSX_PART_BYTES} bytes; refused as a possible archive bomb"
            )
    raw.seek(0)
    try:
        reader, sheet_path = _open_workbook(raw)
    except Exception as error:  # openpyxl raises many kinds on malformed files
        raise FatalInput(f"the spreadsheet cannot be read ({type(error).__name__}: {error})")
    try:
        if sheet_path is None:
            return
        strings = _shared_strings(reader, meter)
        yield from _sheet_rows(reader, sheet_path, strings, meter)
    except FatalInput:
        raise
    except Exception as error:
        raise FatalInput(f"the spreadsheet cannot be read ({type(error).__name__}: {error})")
    finally:
        reader.archive.close()


def _open_workbook(raw: IO[bytes]) -> tuple[Any, str | None]:
    """openpyxl's reader with the workbook read (not its sheets); the first sheet's path."""
    from openpyxl.reader.excel import ExcelReader
    from openpyxl.styles.stylesheet import apply_stylesheet

    reader = ExcelReader(raw, read_only=True, data_only=True)
    reader.read_manifest()
    reader.read_workbook()
    apply_stylesheet(reader.archive, reader.wb)  # the date formats live in the styles
    for _sheet, relation in reader.parser.find_sheets():
        if relation.target in reader.valid_files and "chartsheet" not in relation.Type:
            return reader, str(relation.target)
    return reader, None


def _shared_strings(reader: Any, meter: WorkMeter) -> list[str]:
    """The shared string table, streamed, at most one string per line the import may have."""
    from openpyxl.cell.text import Text
    from openpyxl.xml.constants import SHARED_STRINGS

    part = reader.package.find(SHARED_STRINGS)
    if part is None:
        return []
    strings: list[str] = []
    limit = meter.options.max_lines
    with reader.archive.open(part.PartName[1:]) as source:
        for _, element in ElementTree.iterparse(source):
            if _local_name(element.tag) != "si":
                continue
            if len(strings) >= limit:
                raise FatalInput(
                    f"the spreadsheet has more than {limit} shared strings, one per line the"
                    " import may have; split it into smaller files"
                )
            strings.append(Text.from_tree(element).content.replace("x005F_", ""))
            element.clear()
            meter.check_time()
    return strings


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _sheet_rows(
    reader: Any, sheet_path: str, strings: list[str], meter: WorkMeter
) -> Iterator[tuple[int, list[str]]]:
    """Stream one worksheet's XML: (row number, cell texts), rows without gaps."""
    from openpyxl.utils.cell import column_index_from_string, coordinate_from_string
    from openpyxl.worksheet._reader import WorkSheetParser

    workbook = reader.wb
    converter = WorkSheetParser(
        None,
        strings,
        data_only=True,
        epoch=workbook.epoch,
        date_formats=workbook._date_formats,
        timedelta_formats=workbook._timedelta_formats,
    )
    expected = 1  # the next row number; missing rows are yielded empty, and count as lines
    number = 0
    values: dict[int, str] = {}
    width = 0
    sheet_data = None
    with reader.archive.open(sheet_path) as source:
        for event, element in ElementTree.iterparse(source, events=("start", "end")):
            name = _local_name(element.tag)
            if event == "start":
                if name == "sheetData":
                    sheet_data = element
                elif name == "row":
                    number = _row_number(element.get("r"), expected)
                    for empty in range(expected, number):
                        meter.line(empty)
                        yield empty, []
                    meter.line(number)
                    values, width, converter.col_counter = {}, 0, 0
                continue
            if name == "c":
                reference = element.get("r")
                column = (
                    column_index_from_string(coordinate_from_string(reference)[0])
                    if reference
                    else converter.col_counter + 1
                )
                width = max(width, column)
                meter.row_cells(number, width)
                meter.add_cells(number, 1)
                converter.row_counter = number
                cell = converter.parse_cell(element)
                if cell["value"] is not None:
                    values[column] = str(cell["value"])
                element.clear()
            elif name == "row":
                cells = [values.get(column, "") for column in range(1, width + 1)]
                while cells and not cells[-1].strip():
                    cells.pop()
                yield number, cells
                expected = number + 1
                if sheet_data is not None:
                    sheet_data.clear()  # the rows read so far; keeps memory flat
                meter.check_time()


def _row_number(declared: str | None, expected: int) -> int:
    if declared is None:
        return expected
    try:
        number = int(declared)
    except ValueError:
        raise FatalInput(f"row {expected}: {declared!r} is not a row number")
    if number < expected:
        raise FatalInput(f"row {declared} comes after row {expected - 1}; rows must be in order")
    return number


def csv_preview(
    raw: IO[bytes],
    *,
    filename: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rows: int = 5,
    options: ImportOptions | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The header and the first ``rows`` rows, for choosing the column mapping.

    Runs in a request, so under the same caps as an import (``options``, with a short time
    budget): a preview reads a few rows, but a hostile file could make those few cost a lot.
    """
    meter = WorkMeter(options or ImportOptions())
    if is_spreadsheet(filename):
        found = xlsx_rows(raw, max_bytes=max_bytes, meter=meter)
    else:
        reader, _ = open_decompressed(raw, filename=filename, max_bytes=max_bytes)
        found = csv_rows(reader, meter=meter)
    first = next(found, None)
    if first is None:
        raise FatalInput("file is empty")
    header = [csv_cell_unguarded(cell) for cell in first[1]]
    check_csv_header(header)
    preview = []
    for _, row in found:
        preview.append([csv_cell_unguarded(cell) for cell in row])
        if len(preview) >= rows:
            break
    return header, preview


# --- whole-report helper -----------------------------------------------------------------------


def parse_report(
    raw: IO[bytes], *, filename: str, options: ImportOptions, max_errors: int = 1000
) -> ParseReport:
    """Parse everything and collect it: for tests, tools and files already in memory."""
    if max_errors < 0:
        raise ValueError(f"max_errors must be 0 or more, got {max_errors}")
    parser = StreamParser(raw, filename=filename, options=options)
    collector = ErrorCollector(max_errors)
    examples: list[ParsedExample] = []
    for event in parser.events():
        if isinstance(event, ParsedExample):
            examples.append(event)
        else:
            collector.extend([event])
    return ParseReport(filename, examples, collector.finish(), collector.omitted)


def parse_bytes(
    data: bytes, *, filename: str, options: ImportOptions, max_errors: int = 1000
) -> ParseReport:
    """The streaming parser over data already in memory."""
    return parse_report(io.BytesIO(data), filename=filename, options=options, max_errors=max_errors)


# --- writers (export) --------------------------------------------------------------------------


class ExportRefused(Exception):
    """Some examples cannot be written in the asked format; ``positions`` says which."""


def is_single_turn(messages: list[dict[str, object]]) -> bool:
    roles = [m.get("role") for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    return roles == ["user", "assistant"]


def alternates_for_anthropic(messages: list[dict[str, object]]) -> bool:
    roles = [m.get("role") for m in messages if m.get("role") != "system"]
    starts_ok = bool(roles) and roles[0] == "user" and roles[-1] == "assistant"
    return (
        starts_ok
        and all(role == ANTHROPIC_ROLES[i % 2] for i, role in enumerate(roles))
        and all(m.get("role") != "system" for m in messages[1:])
    )


def _system_and_turns(
    messages: list[dict[str, object]],
) -> tuple[str, list[dict[str, object]]]:
    if messages and messages[0].get("role") == "system":
        return str(messages[0].get("content", "")), messages[1:]
    return "", messages


def to_openai(messages: list[dict[str, object]]) -> dict[str, object]:
    return {"messages": messages}


def to_anthropic(messages: list[dict[str, object]]) -> dict[str, object]:
    """System pulled to the top level; weight and name dropped (Anthropic takes neither)."""
    system, turns = _system_and_turns(messages)
    record: dict[str, object] = {}
    if system:
        record["system"] = system
    record["messages"] = [{"role": m["role"], "content": m["content"]} for m in turns]
    return record


def to_prompt_completion(messages: list[dict[str, object]]) -> dict[str, object]:
    """Single-turn only; a system prompt goes before the user's text, after a blank line."""
    system, turns = _system_and_turns(messages)
    prompt = str(turns[0]["content"])
    return {
        "prompt": f"{system}\n\n{prompt}" if system else prompt,
        "completion": str(turns[1]["content"]),
    }


CSV_EXPORT_HEADER = ["input", "ideal_output", "system", "split"]


def csv_metadata_columns(keys: list[str]) -> list[str]:
    """Column names for metadata keys: the key itself, so the file imports back with the same
    metadata; prefixed only where a key would take a fixed column's name."""
    return [f"metadata.{key}" if key in CSV_EXPORT_HEADER else key for key in keys]


def to_csv_row(messages: list[dict[str, object]], split: str) -> list[str]:
    system, turns = _system_and_turns(messages)
    return [str(turns[0]["content"]), str(turns[1]["content"]), system, split]


def _metadata_cell(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# A spreadsheet reads a cell starting with one of these as a formula (tab and carriage return
# because some programs skip them before looking), so an exported =HYPERLINK(...) or @SUM(...)
# would run when the file is opened. OWASP's advice: prefix such cells with an apostrophe. A cell
# that already starts with apostrophes before one of them gets one more, so that the import can
# take exactly one off and every exported file imports back unchanged. Negative numbers are
# prefixed too: a rule without exceptions is the one that cannot be talked around.
_FORMULA_CELL = re.compile(r"'*[=+\-@\t\r]")
_GUARDED_CELL = re.compile(r"'+[=+\-@\t\r]")


def csv_safe_cell(cell: str) -> str:
    """The cell as a spreadsheet shows it as text, never as a formula (every CSV export)."""
    return "'" + cell if _FORMULA_CELL.match(cell) else cell


def csv_cell_unguarded(cell: str) -> str:
    """Undoes ``csv_safe_cell`` on import: the apostrophe it added is not part of the text."""
    return cell[1:] if _GUARDED_CELL.match(cell) else cell


def csv_line(cells: list[str]) -> str:
    """One CSV row, each cell made formula-safe; the one writer of every CSV export."""
    buffer = io.StringIO()
    # CRLF as RFC 4180 says; it also makes the writer quote cells holding a lone \r.
    csv.writer(buffer, lineterminator="\r\n").writerow(csv_safe_cell(cell) for cell in cells)
    return buffer.getvalue()


def jsonl_line(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


EXPORT_FORMATS = (OPENAI_CHAT, ANTHROPIC, PROMPT_COMPLETION, CSV)
EXPORT_LABELS = {
    OPENAI_CHAT: "OpenAI chat JSONL",
    ANTHROPIC: "Anthropic / Bedrock JSONL",
    PROMPT_COMPLETION: "prompt/completion JSONL",
    CSV: "CSV",
}
# Which examples a format can hold; None = every valid example.
EXPORT_REQUIREMENT: dict[str, tuple[Callable[[list[dict[str, object]]], bool], str] | None] = {
    OPENAI_CHAT: None,
    ANTHROPIC: (
        alternates_for_anthropic,
        "Anthropic needs user and assistant turns alternating, starting with user",
    ),
    PROMPT_COMPLETION: (is_single_turn, "prompt/completion holds single-turn examples only"),
    CSV: (is_single_turn, "CSV holds single-turn examples only"),
}


def export_line(
    fmt: str,
    messages: list[dict[str, object]],
    split: str,
    metadata: dict[str, object] | None = None,
    metadata_keys: list[str] | None = None,
) -> str:
    """One exported example; CSV rows also carry ``metadata`` under ``metadata_keys``."""
    if fmt == CSV:
        values = metadata or {}
        cells = [_metadata_cell(values.get(key)) for key in metadata_keys or []]
        return csv_line([*to_csv_row(messages, split), *cells])
    if fmt == ANTHROPIC:
        return jsonl_line(to_anthropic(messages))
    if fmt == PROMPT_COMPLETION:
        return jsonl_line(to_prompt_completion(messages))
    return jsonl_line(to_openai(messages))
