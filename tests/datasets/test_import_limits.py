"""Issue 13, items 2 and 3: an import's work is bounded in lines, cells, expansion and time, not
only in bytes, and every limit that ends one is named with the file and the line."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from datasets.formats import CsvMapping, ImportOptions, LineError, StreamParser
from datasets.imports.services import ImportRequest, import_batch_create, import_batch_run
from datasets.jsonl import ParsedExample
from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.models import Project
from ftportal.roles import Role

from .bombs import inline_cell, xlsx_from_sheet_xml, xlsx_huge_dimension, xlsx_one_wide_row

CHAT = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
MAPPING = CsvMapping(input_column="ticket", output_column="category")
# Each bomb took the old parser from seconds to minutes; these bounds leave room for a busy
# two-core machine and still tell the two apart.
QUICK_S = 5
BOUNDED_RSS_BYTES = 300 * 1024 * 1024


def events(data: bytes, filename: str, **options: object) -> list[object]:
    mapping = MAPPING if filename.endswith((".xlsx", ".csv")) else None
    parser = StreamParser(
        io.BytesIO(data),
        filename=filename,
        options=ImportOptions(csv_mapping=mapping, **options),  # type: ignore[arg-type]
    )
    return list(parser.events())


def fatal(found: list[object]) -> LineError:
    assert found and isinstance(found[-1], LineError), found[-3:]
    return found[-1]


class PeakMemory:
    """The most this process's resident memory grew while the block ran (sampled every 10 ms)."""

    def __enter__(self) -> PeakMemory:
        self._process = psutil.Process(os.getpid())
        self._start = self._process.memory_info().rss
        self.growth = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.growth = max(self.growth, self._process.memory_info().rss - self._start)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- spreadsheets (item 3) -----------------------------------------------------------------------


def test_an_xlsx_row_of_two_million_cells_is_refused_at_the_cap_quickly_and_small() -> None:
    bomb = xlsx_one_wide_row(2_000_000)
    started = time.monotonic()

    with PeakMemory() as memory:
        error = fatal(events(bomb, "bomb.xlsx"))

    assert time.monotonic() - started < QUICK_S
    assert memory.growth < BOUNDED_RSS_BYTES
    assert error.line == 1
    assert "row 1 has more than 1024 cells, the limit per row" in error.message


def test_an_xlsx_declaring_a_huge_dimension_reads_only_its_real_rows() -> None:
    bomb = xlsx_huge_dimension("A1:XFD100000")
    assert len(bomb) < 2000  # the 1.5 KB file
    started = time.monotonic()

    found = events(bomb, "dimension.xlsx")

    assert time.monotonic() - started < QUICK_S
    [example] = found
    assert isinstance(example, ParsedExample), example
    assert example.messages[0]["content"] == "Printer jammed"


def test_a_cell_far_to_the_right_counts_every_column_before_it() -> None:
    row = f'<row r="1">{inline_cell("A1", "ticket")}{inline_cell("XFD1", "far")}</row>'
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{row}</sheetData></worksheet>"
    )

    error = fatal(events(xlsx_from_sheet_xml(sheet.encode()), "far.xlsx"))

    assert "row 1 has more than 1024 cells" in error.message


def test_the_total_cells_of_a_spreadsheet_are_capped_with_the_row_named() -> None:
    rows = "".join(
        f'<row r="{n}">{inline_cell(f"A{n}", "ticket" if n == 1 else f"t{n}")}'
        f"{inline_cell(f'B{n}', 'category' if n == 1 else 'hw')}</row>"
        for n in range(1, 5)
    )
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{rows}</sheetData></worksheet>"
    )

    error = fatal(events(xlsx_from_sheet_xml(sheet.encode()), "many.xlsx", max_cells=5))

    assert error.line == 3
    assert "more than 5 cells by row 3, the limit of one import" in error.message


def test_a_csv_row_of_too_many_cells_is_refused_with_the_limit_and_row() -> None:
    data = b"ticket,category\n" + b"a" + b",b" * 2000 + b"\n"

    error = fatal(events(data, "wide.csv"))

    assert "row 2 has more than 1024 cells, the limit per row" in error.message


# --- lines, expansion and time (item 2) --------------------------------------------------------


def test_blank_lines_count_toward_the_lines_cap() -> None:
    data = gzip.compress(b"\n" * 50 + CHAT)

    error = fatal(events(data, "blank.jsonl.gz", max_lines=20))

    assert error.line == 21
    assert "more than 20 lines (blank lines count), the limit of one import" in error.message


def test_the_expansion_ratio_counts_compressed_bytes_read_not_the_file_position() -> None:
    # A zip whose one listed entry sits behind 4 MB of an unlisted one: the file position (what
    # was counted before) starts at 4 MB, so the entry's expansion looked 250 times smaller.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", os.urandom(4 * 1024 * 1024), zipfile.ZIP_STORED)
        archive.writestr("data.jsonl", (b"x" * 1000 + b"\n") * 40_000)
        padding = archive.getinfo("padding.bin")
        archive.filelist.remove(padding)
        del archive.NameToInfo["padding.bin"]

    error = fatal(events(buffer.getvalue(), "padded.zip", max_expansion_ratio=200))

    assert "expands more than 200 times; refused as a possible archive bomb" in error.message


def test_a_parse_past_its_time_budget_stops_with_the_budget_and_line() -> None:
    error = fatal(events(CHAT * 10, "slow.jsonl", time_budget_s=0))

    assert error.line == 1
    assert "reading the file took longer than its time budget of 0 s" in error.message


# --- through the import service -----------------------------------------------------------------


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[Path]:
    with override_settings(FTPORTAL_UPLOADS_DIR=tmp_path):
        yield tmp_path


@pytest.mark.django_db
@override_settings(FTPORTAL_IMPORT_MAX_LINES=30)
def test_an_import_over_a_cap_fails_naming_the_file_the_line_and_the_limit(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    data = gzip.compress(CHAT * 10 + b"\n" * 100)
    batch = import_batch_create(
        dataset=dataset,
        upload=SimpleUploadedFile("tickets.jsonl.gz", data),
        user=lead,
        request=ImportRequest(),
    )

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    assert batch.failure_message == (
        "tickets.jsonl.gz: line 31: the file has more than 30 lines (blank lines count), the"
        " limit of one import; split it into smaller files; nothing was imported."
    )
    assert Example._base_manager.count() == 0
    assert list(uploads.iterdir()) == []


@pytest.mark.django_db
@override_settings(FTPORTAL_IMPORT_TIME_BUDGET_SECONDS=0)
def test_an_import_past_its_time_budget_fails_with_the_budget_and_line_named(
    dataset: Dataset, lead: User, uploads: Path
) -> None:
    batch = import_batch_create(
        dataset=dataset,
        upload=SimpleUploadedFile("slow.jsonl", CHAT * 3),
        user=lead,
        request=ImportRequest(),
    )

    batch = import_batch_run(batch_id=batch.pk)

    assert batch.status == ImportStatus.FAILED
    assert batch.failure_message == (
        "slow.jsonl: line 1: reading the file took longer than its time budget of 0 s; split it"
        " into smaller files; nothing was imported."
    )


# --- the bombs through the pages: never parsed in the request ---------------------------------


def post_upload(client: Client, dataset: Dataset, name: str, data: bytes) -> Any:
    return client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": SimpleUploadedFile(name, data)},
    )


@pytest.mark.django_db
def test_the_wide_row_xlsx_ends_at_the_column_choice_quickly_and_small(
    client: Client, dataset: Dataset, lead: User, uploads: Path
) -> None:
    client.force_login(lead)
    bomb = xlsx_one_wide_row(2_000_000)
    started = time.monotonic()

    with PeakMemory() as memory:
        post_upload(client, dataset, "wide.xlsx", bomb)
        batch = ImportBatch.objects.get(dataset=dataset)
        page = client.get(reverse("import_mapping", args=[dataset.project_id, batch.pk]))

    assert time.monotonic() - started < QUICK_S
    assert memory.growth < BOUNDED_RSS_BYTES
    assert page.status_code == 302
    batch.refresh_from_db()
    assert batch.status == ImportStatus.FAILED
    assert "wide.xlsx: row 1 has more than 1024 cells, the limit per row" in (batch.failure_message)
    assert list(uploads.iterdir()) == []


@pytest.mark.django_db
def test_the_huge_dimension_xlsx_is_queued_for_the_worker_not_imported_in_the_request(
    client: Client,
    dataset: Dataset,
    lead: User,
    uploads: Path,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    client.force_login(lead)
    post_upload(client, dataset, "dimension.xlsx", xlsx_huge_dimension("A1:XFD100000"))
    batch = ImportBatch.objects.get(dataset=dataset)
    started = time.monotonic()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(
            reverse("import_mapping", args=[dataset.project_id, batch.pk]),
            {"input_column": "ticket", "output_column": "category"},
        )

    assert time.monotonic() - started < QUICK_S
    batch.refresh_from_db()
    assert (batch.status, len(queued)) == (ImportStatus.QUEUED, 1)
    started = time.monotonic()
    batch = import_batch_run(batch_id=batch.pk)  # what the worker does
    assert time.monotonic() - started < QUICK_S
    assert (batch.status, batch.imported_count) == (ImportStatus.SUCCEEDED, 1)
