"""Import services: store an upload, stream it into examples, in the request or in the worker.

One streaming core (``_import_into``) does the work for both paths: small plain files import
inside the request for instant feedback; big ones, and every compressed or spreadsheet upload
(whose work is not bounded by their size), wait on disk and a Celery task imports them while the
page polls the progress.

No transaction stays open while a file is parsed (on SQLite that would hold the one write lock
and stall every other writer): valid rows are written in short transactions of CHUNK_SIZE rows,
marked ``import_pending`` so that nobody sees them (the Example manager hides them), and the
import ends by publishing them all in one UPDATE with the batch's final status, or by deleting
them. So a file with errors still stores nothing (unless the user asked for the valid lines
only), and other writers proceed between chunks. Parsing is bounded in lines, cells and time
(settings FTPORTAL_IMPORT_*), and a worker import beats a heartbeat that the import reaper
(datasets/imports/reaper.py) watches.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.move import file_move_safe
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction
from django.utils import timezone

from ftportal.errors import ApplicationError
from ftportal.heartbeat import Heartbeat, worker_name
from ftportal.ownership import heartbeat_for, ownership_claim
from ftportal.state import state_change

from ..contracts import ContractCheck
from ..formats import (
    ALL_FORMATS,
    AUTO,
    CSV,
    CsvMapping,
    FatalInput,
    ImportOptions,
    StreamParser,
    check_csv_mapping,
    csv_preview,
    is_compressed,
    is_spreadsheet,
    with_default_system_prompt,
)
from ..jsonl import ErrorCollector, LineError, ParsedExample
from ..models import IMPORT_TRANSITIONS, Dataset, Example, ImportBatch, ImportStatus
from ..services import assistant_answer

logger = logging.getLogger(__name__)

# Rows go to the database this many at a time: memory is bounded by the chunk, not the file.
CHUNK_SIZE = 2000
MAX_KEPT_ERRORS = 1000
PROGRESS_TTL_S = 24 * 3600
# The column choice page reads the header and a few rows in the request: never for longer.
PREVIEW_TIME_BUDGET_S = 5.0
SPREADSHEET_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".csv.zip", ".xlsx")


class ImportRejected(ApplicationError):
    """The file had errors and the user did not ask to import only the valid lines."""


# (bytes of the upload read, lines read, examples so far, errors so far)
ProgressSink = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class ImportRequest:
    """What the user asked for, as stored in ``ImportBatch.options``.

    ``default_system_prompt`` goes in front of every imported example that brings no system
    message of its own (a CSV row without a system column or fixed prompt, a JSONL line
    without one); empty for none. None, as an upload leaves it when it names none, is the
    project's default, which ``import_submit`` puts in before anything is stored, so an
    import keeps the default it started with.
    """

    format: str = AUTO
    valid_lines_only: bool = False
    csv_mapping: CsvMapping | None = None
    default_system_prompt: str | None = None

    def as_options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "format": self.format,
            "valid_lines_only": self.valid_lines_only,
        }
        if self.csv_mapping is not None:
            options["csv"] = self.csv_mapping.as_options()
        if self.default_system_prompt:
            options["default_system_prompt"] = self.default_system_prompt
        return options

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ImportRequest:
        mapping = options.get("csv")
        return cls(
            format=str(options.get("format") or AUTO),
            valid_lines_only=bool(options.get("valid_lines_only")),
            csv_mapping=CsvMapping.from_options(mapping) if isinstance(mapping, dict) else None,
            default_system_prompt=str(options.get("default_system_prompt") or ""),
        )


def import_format_check(requested: str) -> str:
    if requested not in (AUTO, *ALL_FORMATS):
        raise ApplicationError(
            f"format: {requested!r} is not a format; use one of: {', '.join((AUTO, *ALL_FORMATS))}",
            extra={"field": "format"},
        )
    return requested


def needs_column_mapping(*, filename: str, requested_format: str) -> bool:
    return requested_format == CSV or (
        requested_format == AUTO and filename.lower().endswith(SPREADSHEET_SUFFIXES)
    )


def upload_size_check(*, filename: str, size: int | None) -> None:
    """Refuse a file over the import limit before reading a byte of it."""
    limit = settings.FTPORTAL_MAX_IMPORT_BYTES
    if size is not None and size > limit:
        raise ApplicationError(
            f"file: {filename} is {size} bytes, over the import limit of {limit} bytes.",
            extra={"field": "file"},
        )


def _error_dicts(errors: list[LineError]) -> list[dict[str, object]]:
    return [{"line": e.line, "field": e.field, "message": e.message} for e in errors]


def _with_weights(parsed: ParsedExample) -> list[dict[str, object]]:
    """Keep OpenAI's per-message ``weight`` (0 = do not train on this reply) with the message."""
    return [
        {**message, "weight": parsed.weights[index]} if index in parsed.weights else dict(message)
        for index, message in enumerate(parsed.messages)
    ]


def _parse_options(request: ImportRequest) -> ImportOptions:
    return ImportOptions(
        format=request.format,
        csv_mapping=request.csv_mapping,
        max_bytes=settings.FTPORTAL_MAX_IMPORT_BYTES,
        max_lines=settings.FTPORTAL_IMPORT_MAX_LINES,
        max_cells_per_row=settings.FTPORTAL_IMPORT_MAX_CELLS_PER_ROW,
        max_cells=settings.FTPORTAL_IMPORT_MAX_CELLS,
        time_budget_s=settings.FTPORTAL_IMPORT_TIME_BUDGET_SECONDS,
    )


def needs_worker(*, filename: str, size: int, head: bytes) -> bool:
    """Whether an upload must be imported by the worker, never inside a request.

    Size bounds the work of a plain file, but not of a compressed one (a small gzip may hold a
    billion lines) or a spreadsheet (a small .xlsx may declare millions of cells).
    """
    return (
        size > settings.FTPORTAL_SYNC_IMPORT_MAX_BYTES
        or is_spreadsheet(filename)
        or is_compressed(head)
    )


def upload_needs_worker(upload: UploadedFile) -> bool:
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    return needs_worker(filename=upload.name or "", size=upload.size or 0, head=head)


def _stored_needs_worker(batch: ImportBatch) -> bool:
    try:
        with open(batch.stored_path, "rb") as stored:
            head = stored.read(4)
    except FileNotFoundError:
        head = b""  # the run reports the missing file
    return needs_worker(filename=batch.filename, size=batch.size_bytes, head=head)


@dataclass
class _Counts:
    valid: int = 0
    inserted: int = 0
    bad_lines: int = 0
    last_bad_line: int = 0


def _import_into(batch: ImportBatch, raw: IO[bytes], progress: ProgressSink | None) -> None:
    """The streaming core: parse ``raw`` into ``batch``, inserting pending rows in chunks.

    Must run outside any long transaction; raises ``ImportRejected`` when the file may not be
    imported (the caller then deletes the pending rows). Fills in the batch's counts and format,
    but does not save it; the caller publishes the rows with the batch.
    """
    request = ImportRequest.from_options(batch.options)
    parser = StreamParser(raw, filename=batch.filename, options=_parse_options(request))
    collector = ErrorCollector(MAX_KEPT_ERRORS)
    counts = _Counts()
    pending: list[ParsedExample] = []
    violations = ContractViolations(batch.dataset.answer_contract)

    def report() -> None:
        if progress is not None:
            progress(parser.progress(), parser.rows, counts.inserted, _error_total(collector))

    def flush() -> None:
        # One short transaction per chunk: other writers get the database between chunks.
        with transaction.atomic():
            _insert_examples(batch, pending)
        counts.inserted += len(pending)
        pending.clear()

    for seen, event in enumerate(parser.events(), start=1):
        if isinstance(event, LineError):
            collector.extend([event])
            if event.line > 0 and event.line != counts.last_bad_line:
                counts.bad_lines += 1
                counts.last_bad_line = event.line
        else:
            event = with_default_system_prompt(event, request.default_system_prompt or "")
            counts.valid += 1
            # Once a line is bad an all-or-nothing import will be refused: keep reading to
            # report every error, but stop writing rows that would be deleted anyway.
            if request.valid_lines_only or not collector.kept:
                pending.append(event)
                violations.check(event)
            if len(pending) >= CHUNK_SIZE:
                flush()
        # Progress keeps moving even when nothing is being written (a file full of errors).
        if seen % CHUNK_SIZE == 0:
            report()
    flush()
    report()

    errors = collector.finish()
    batch.format = parser.format if parser.format in ALL_FORMATS else batch.format
    batch.bytes_read = batch.size_bytes or parser.progress()
    batch.line_count = counts.valid + counts.bad_lines
    batch.imported_count = counts.inserted
    batch.errors = _error_dicts(errors)
    batch.contract_violations = violations.report()
    _refuse_if_rejected(batch, errors, counts, request, fatal=parser.fatal)


# The fields that differ from row to row; every other column takes one value for the chunk.
_ROW_FIELDS = ("messages", "metadata", "source_line")


def _insert_examples(batch: ImportBatch, parsed: list[ParsedExample]) -> None:
    """Insert a chunk of new examples; on Postgres with COPY, several times faster than INSERT.

    The columns come from the model, so a field added later is copied too, with the value a new
    Example would get (its default, auto_now timestamps), prepared by the field as for a save.
    """
    if not parsed:
        return
    if connection.vendor != "postgresql":
        Example.objects.bulk_create(
            Example(
                dataset_id=batch.dataset_id,
                messages=_with_weights(example),
                metadata=example.metadata,
                import_batch=batch,
                source_line=example.line,
                import_pending=True,
            )
            for example in parsed
        )
        return
    template = Example(dataset_id=batch.dataset_id, import_batch=batch, import_pending=True)
    fields = [field for field in Example._meta.concrete_fields if not field.primary_key]
    shared = {
        field.name: field.get_db_prep_save(field.pre_save(template, add=True), connection)
        for field in fields
        if field.name not in _ROW_FIELDS
    }
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    sql = f"COPY {quote(Example._meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for example in parsed:
            # COPY's text format takes JSON as its text; Postgres parses it into jsonb.
            row: dict[str, object] = {
                **shared,
                "messages": json.dumps(_with_weights(example), ensure_ascii=False),
                "metadata": json.dumps(example.metadata, ensure_ascii=False),
                "source_line": example.line,
            }
            copy.write_row([row[field.name] for field in fields])


class ContractViolations:
    """Imported lines whose answer breaks the dataset's answer contract.

    They are imported all the same (the reviewer fixes the answer, or rejects it, with the
    finding on the card); the import report says how many and which lines.
    """

    def __init__(self, contract: dict[str, Any]) -> None:
        self.contract = contract
        self.checker = ContractCheck(contract)
        self.count = 0
        self.lines: list[dict[str, object]] = []

    def check(self, example: ParsedExample) -> None:
        if not self.contract:
            return
        message = self.checker.violation(assistant_answer(example.messages))
        if message is None:
            return
        self.count += 1
        if len(self.lines) < MAX_KEPT_ERRORS:
            self.lines.append({"line": example.line, "message": message})

    def report(self) -> dict[str, object]:
        return {"count": self.count, "lines": self.lines} if self.count else {}


def _error_total(collector: ErrorCollector) -> int:
    return len(collector.kept) + collector.omitted


def _refuse_if_rejected(
    batch: ImportBatch,
    errors: list[LineError],
    counts: _Counts,
    request: ImportRequest,
    *,
    fatal: bool,
) -> None:
    name = batch.filename
    extra = {"errors": batch.errors, "valid_lines": counts.valid}
    if fatal:
        raise ImportRejected(f"{name}: {errors[-1]}; nothing was imported.", extra=extra)
    if errors and not (request.valid_lines_only and counts.inserted):
        what = f"{counts.bad_lines} line(s) have errors" if counts.bad_lines else str(errors[0])
        raise ImportRejected(f"{name}: {what}; nothing was imported.", extra=extra)
    if not counts.inserted:
        raise ImportRejected(f"{name}: no examples found; nothing was imported.", extra=extra)


# --- inside the request ------------------------------------------------------------------------


def examples_import_upload(
    *,
    dataset: Dataset,
    upload: UploadedFile,
    user: User,
    request: ImportRequest,
) -> ImportBatch:
    """Import a small plain upload now; all-or-nothing unless ``valid_lines_only``.

    On refusal nothing is stored, not even the batch row: the caller shows the errors at once.
    A compressed or spreadsheet upload, or a big one, is refused here: it goes to the worker
    (``import_batch_create`` and ``import_batch_start``).
    """
    if upload_needs_worker(upload):
        raise ApplicationError(
            f"file: {upload.name} is compressed, a spreadsheet or over"
            f" {settings.FTPORTAL_SYNC_IMPORT_MAX_BYTES} bytes; it is imported by the worker.",
            extra={"field": "file"},
        )
    return examples_import_file(
        dataset=dataset,
        stream=upload.file,  # type: ignore[arg-type]
        filename=upload.name or "upload.jsonl",
        size=upload.size,
        user=user,
        request=request,
    )


def examples_import_file(
    *,
    dataset: Dataset,
    stream: IO[bytes],
    filename: str,
    size: int | None,
    user: User,
    request: ImportRequest = ImportRequest(),  # noqa: B008 (frozen, so a shared default is safe)
) -> ImportBatch:
    """Import an open binary file now, through the same streaming core as background imports.

    For small uploads, the demo loader and scripts; on refusal nothing is stored.
    """
    upload_size_check(filename=filename, size=size)
    batch = ImportBatch.objects.create(
        dataset=dataset,
        filename=filename,
        uploaded_by=user,
        status=ImportStatus.RUNNING,
        size_bytes=size or 0,
        options=request.as_options(),
        worker=worker_name(),
        started_at=timezone.now(),
    )
    try:
        # The demo loader and scripts may import big files this way: the reaper sees them alive.
        with _heartbeat(batch):
            _import_into(batch, stream, progress=None)
        _publish(batch)
    except BaseException:
        import_pending_rows_delete(batch.pk)
        ImportBatch.objects.filter(pk=batch.pk).delete()
        raise
    return batch


def import_batch_transition(
    batch: ImportBatch,
    target: ImportStatus,
    *,
    update_fields: Sequence[str] | None = None,
    **changes: object,
) -> None:
    """Move an import to ``target`` if IMPORT_TRANSITIONS allows it, with the other field
    changes; the whole row is saved unless ``update_fields`` names the other columns to write
    besides the status and the changes."""
    state_change(
        batch,
        kind="import",
        target=target,
        allowed=IMPORT_TRANSITIONS,
        changes=changes,
        update_fields=update_fields,
    )


def import_batch_finish(batch: ImportBatch, status: ImportStatus, failure: str = "") -> None:
    # The whole row: a worker's batch carries its counts, written with the end. The failure may
    # carry an exception's text; the transition takes the server paths out of it.
    import_batch_transition(batch, status, failure_message=failure, finished_at=timezone.now())


class ImportTakenOver(ApplicationError):
    """The batch was ended by someone else (the reaper) while this run was still writing."""


def _publish(batch: ImportBatch) -> None:
    """Make the batch's rows visible and mark it imported, together, in one short transaction.

    The batch row is locked first and must still be running under this run: a run the reaper
    already failed (it thought the worker dead) must not publish behind its back.
    """
    with transaction.atomic():
        current = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        if current.status != ImportStatus.RUNNING or current.worker != batch.worker:
            raise ImportTakenOver(f"Import {batch.pk} was ended while it ran: {current.status}.")
        Example._base_manager.filter(import_batch_id=batch.pk, import_pending=True).update(
            import_pending=False
        )
        import_batch_finish(batch, ImportStatus.SUCCEEDED)


def import_pending_rows_delete(batch_id: int) -> None:
    """Delete the unpublished rows of an import, a chunk per short transaction."""
    pending = Example._base_manager.filter(import_batch_id=batch_id, import_pending=True)
    while True:
        ids = list(pending.values_list("pk", flat=True)[:CHUNK_SIZE])
        if not ids:
            return
        with transaction.atomic():
            Example._base_manager.filter(pk__in=ids, import_pending=True).delete()


# --- in the background -------------------------------------------------------------------------


def _stored_path_for(filename: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)[-100:] or "upload"
    directory = Path(settings.FTPORTAL_UPLOADS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{uuid.uuid4().hex}-{safe}"


def _store_upload(upload: UploadedFile, destination: Path) -> None:
    """Move a spooled upload into place (a rename on one disk); write small ones in chunks."""
    temporary_path = getattr(upload, "temporary_file_path", None)
    if callable(temporary_path):
        file_move_safe(temporary_path(), str(destination), allow_overwrite=False)
        return
    with destination.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def import_batch_create(
    *,
    dataset: Dataset,
    upload: UploadedFile,
    user: User,
    request: ImportRequest,
) -> ImportBatch:
    """Keep the upload on disk and record a queued import; ``import_batch_start`` queues it."""
    filename = upload.name or "upload"
    upload_size_check(filename=filename, size=upload.size)
    destination = _stored_path_for(filename)
    _store_upload(upload, destination)
    try:
        return ImportBatch.objects.create(
            dataset=dataset,
            filename=filename,
            uploaded_by=user,
            status=ImportStatus.QUEUED,
            stored_path=str(destination),
            size_bytes=destination.stat().st_size,
            options=request.as_options(),
        )
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def import_preview(batch: ImportBatch, rows: int = 5) -> tuple[list[str], list[list[str]]]:
    """The header and first rows of a stored CSV upload, for choosing the columns."""
    try:
        with open(batch.stored_path, "rb") as raw:
            return csv_preview(
                raw,
                filename=batch.filename,
                max_bytes=settings.FTPORTAL_MAX_IMPORT_BYTES,
                rows=rows,
                options=replace(
                    _parse_options(ImportRequest()), time_budget_s=PREVIEW_TIME_BUDGET_S
                ),
            )
    except FatalInput as fatal:
        raise ApplicationError(f"{batch.filename}: {fatal.message}", extra={"field": "file"})
    except FileNotFoundError:
        raise ApplicationError(f"{batch.filename}: the upload is gone; upload it again.")


def import_batch_set_mapping(*, batch: ImportBatch, mapping: CsvMapping) -> ImportBatch:
    """Record the columns chosen for a stored CSV upload, checked against its header."""
    if batch.status != ImportStatus.QUEUED:
        raise ApplicationError(f"Import {batch.pk} has already started; the columns are fixed.")
    header, _ = import_preview(batch, rows=0)
    try:
        check_csv_mapping(mapping, header)
    except FatalInput as fatal:
        raise ApplicationError(
            f"{fatal.field_path.replace('_', ' ')}: {fatal.message}",
            extra={"field": fatal.field_path},
        )
    batch.options = {**batch.options, "format": CSV, "csv": mapping.as_options()}
    batch.save(update_fields=["options"])
    return batch


def import_batch_abandon(*, batch: ImportBatch, message: str) -> ImportBatch:
    """A stored upload whose header cannot be read: fail the import and drop the file."""
    with transaction.atomic():
        batch = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status == ImportStatus.QUEUED:
            import_batch_finish(batch, ImportStatus.FAILED, failure=message)
    import_upload_remove(batch)
    return batch


def import_upload_remove(batch: ImportBatch) -> None:
    """Drop an ended import's stored upload and live figures; done, failed, reaped or abandoned."""
    if batch.stored_path:
        Path(batch.stored_path).unlink(missing_ok=True)
    cache.delete(_progress_key(batch.pk))


def import_batch_start(*, batch: ImportBatch) -> None:
    """Import a stored upload: now when it is small and plain, otherwise on the worker."""
    if not _stored_needs_worker(batch):
        import_batch_run(batch_id=batch.pk)
        return
    # Deferred: datasets.tasks imports this module to do the work it queues.
    from ..tasks import run_import

    batch_id = batch.pk
    transaction.on_commit(lambda: run_import.delay(batch_id))


class ImportRoute(enum.Enum):
    """Where a submitted upload went: imported now, queued for the worker, or stored until the
    user chooses its CSV columns."""

    IMPORTED = "imported"
    QUEUED = "queued"
    NEEDS_COLUMNS = "needs_columns"


@dataclass(frozen=True)
class ImportSubmission:
    batch: ImportBatch
    route: ImportRoute


def _with_the_default_system_prompt(request: ImportRequest, dataset: Dataset) -> ImportRequest:
    """The upload's own default system prompt, checked, or the project's when it names none."""
    if request.default_system_prompt is None:
        return replace(request, default_system_prompt=dataset.project.default_system_prompt)
    if "\x00" in request.default_system_prompt:
        raise ApplicationError(
            "default_system_prompt: contains a NUL character, which cannot be stored; remove it.",
            extra={"field": "default_system_prompt"},
        )
    return replace(request, default_system_prompt=request.default_system_prompt.strip())


def import_submit(
    *,
    dataset: Dataset,
    upload: UploadedFile,
    user: User,
    request: ImportRequest,
) -> ImportSubmission:
    """The one entry for a new upload, from the page or the API. An upload that names no
    default system prompt gets the project's (``ImportRequest.default_system_prompt``).

    A spreadsheet without chosen columns is stored and waits for them; a small plain upload is
    imported inside the request (``upload_needs_worker``); anything else is stored, its batch
    recorded, and the worker's task enqueued once that commits.
    """
    filename = upload.name or "upload.jsonl"
    request = _with_the_default_system_prompt(request, dataset)
    if request.csv_mapping is None and needs_column_mapping(
        filename=filename, requested_format=request.format
    ):
        batch = import_batch_create(dataset=dataset, upload=upload, user=user, request=request)
        return ImportSubmission(batch=batch, route=ImportRoute.NEEDS_COLUMNS)
    if not upload_needs_worker(upload):
        batch = examples_import_upload(dataset=dataset, upload=upload, user=user, request=request)
        return ImportSubmission(batch=batch, route=ImportRoute.IMPORTED)
    batch = import_batch_create(dataset=dataset, upload=upload, user=user, request=request)
    if request.csv_mapping is not None:
        try:
            import_batch_set_mapping(batch=batch, mapping=request.csv_mapping)
        except ApplicationError as error:
            # The stored upload's header does not fit the columns: the batch is kept as failed
            # (so the import list says why) and the file dropped.
            import_batch_abandon(batch=batch, message=error.message)
            raise
    with transaction.atomic():
        import_batch_start(batch=batch)
    return ImportSubmission(batch=batch, route=ImportRoute.QUEUED)


def _progress_key(batch_id: int) -> str:
    return f"import-progress:{batch_id}"


def _publish_progress(batch_id: int) -> ProgressSink:
    def publish(bytes_read: int, lines: int, imported: int, errors: int) -> None:
        cache.set(
            _progress_key(batch_id),
            {"bytes_read": bytes_read, "lines": lines, "imported": imported, "errors": errors},
            PROGRESS_TTL_S,
        )

    return publish


@dataclass(frozen=True)
class ImportProgress:
    status: str
    bytes_read: int
    size_bytes: int
    lines: int
    imported: int
    errors: int

    @property
    def percent(self) -> int:
        if self.status == ImportStatus.SUCCEEDED:
            return 100
        return min(100, self.bytes_read * 100 // self.size_bytes) if self.size_bytes else 0

    @property
    def finished(self) -> bool:
        return self.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED)


def import_progress(batch: ImportBatch) -> ImportProgress:
    """What the page shows: the row once finished, the worker's live figures while it runs.

    The rows being inserted stay hidden until the import publishes them, so the live figures
    travel through the cache.
    """
    live = cache.get(_progress_key(batch.pk)) if batch.status == ImportStatus.RUNNING else None
    if isinstance(live, dict):
        return ImportProgress(
            status=batch.status,
            bytes_read=int(live.get("bytes_read", 0)),
            size_bytes=batch.size_bytes,
            lines=int(live.get("lines", 0)),
            imported=int(live.get("imported", 0)),
            errors=int(live.get("errors", 0)),
        )
    return ImportProgress(
        status=batch.status,
        bytes_read=batch.bytes_read,
        size_bytes=batch.size_bytes,
        lines=batch.line_count,
        imported=batch.imported_count,
        errors=len(batch.errors),
    )


def _claim(batch_id: int) -> ImportBatch | None:
    """Mark a queued import running under this worker; None when it is not queued any more.

    A RUNNING batch belongs to a run that is alive (its heartbeat says so) or dead; either way
    a redelivered task leaves it alone, and the import reaper ends a dead one.
    """
    with transaction.atomic():
        batch = ImportBatch.objects.select_for_update(skip_locked=True).filter(pk=batch_id).first()
        if batch is None or batch.status != ImportStatus.QUEUED:
            return None
        ownership_claim(batch)
        import_batch_transition(
            batch, ImportStatus.RUNNING, update_fields=["worker", "started_at", "heartbeat_at"]
        )
    return batch


def _heartbeat(batch: ImportBatch) -> Heartbeat:
    return heartbeat_for(
        lambda: ImportBatch.objects.filter(
            pk=batch.pk, status=ImportStatus.RUNNING, worker=batch.worker
        ),
        name=f"import-{batch.pk}",
    )


def import_batch_run(*, batch_id: int) -> ImportBatch:
    """Stream a stored upload into the dataset; publish its rows or drop them; record the end.

    Runs in the worker for big, compressed and spreadsheet files and in the request for small
    plain ones. The stored upload is deleted when the import ends, whatever the outcome; one
    whose worker dies is ended, and its upload deleted, by the import reaper.
    """
    batch = _claim(batch_id)
    if batch is not None:
        try:
            with _heartbeat(batch):
                _run(batch)
        finally:
            import_upload_remove(batch)
    return ImportBatch.objects.get(pk=batch_id)


def _run(batch: ImportBatch) -> None:
    publish = _publish_progress(batch.pk)
    publish(0, 0, 0, 0)
    try:
        with open(batch.stored_path, "rb") as raw:
            _import_into(batch, raw, progress=publish)
        _publish(batch)
    except ImportTakenOver:
        import_pending_rows_delete(batch.pk)
    except ImportRejected as rejected:
        _fail(batch, rejected.message, rejected.extra.get("errors", []))
    except FileNotFoundError:
        _fail(batch, f"{batch.filename}: the stored upload is gone; upload it again.", [])
    except Exception as error:
        logger.exception("import %s failed", batch.pk)
        _fail(batch, f"{batch.filename}: the import failed ({error}); nothing was imported.", [])


def _fail(batch: ImportBatch, message: str, errors: list[dict[str, object]]) -> None:
    """Delete the rows written so far, then record the failure (unless the reaper already did)."""
    import_pending_rows_delete(batch.pk)
    with transaction.atomic():
        current = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        if current.status != ImportStatus.RUNNING or current.worker != batch.worker:
            return
        current.errors = errors
        current.imported_count = 0
        import_batch_finish(current, ImportStatus.FAILED, failure=message)
