"""The request log's writer: the gateway hands each request's row to an in-process queue and
answers at once; a background thread writes the rows in batches. A clean shutdown writes
everything still queued; a full queue drops the row and counts it (``dropped``), so logging
never slows or blocks an answer.

The gateway calls :func:`request_log_enqueue` with a :class:`RequestLogEntry`; ``/healthz``
shows :func:`request_log_health` (rows queued and dropped in the answering process), and tests
read :func:`request_log_dropped_count` and :func:`request_log_queued_count`; feedback asks
:func:`request_log_recent_project` whose a request is while its row may still be queued. A
clean stop of the ASGI server writes what is queued (its lifespan shutdown, ``config.asgi``; an
exit hook as well, for other servers).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import BooleanField, ExpressionWrapper, JSONField, Q
from django.utils import timezone
from psycopg.types.json import Jsonb

from datasets.quality.analyzers import find_pii

from .models import Feedback, RequestLog
from .spending import serving_rows_priced

logger = logging.getLogger(__name__)

# A drop is logged on the first one and then every this many, so an overload does not also
# flood the log it is overloading.
DROP_LOG_EVERY = 1000
# How often a waiting writer looks whether it is being closed.
STOP_POLL_SECONDS = 0.05


def new_request_id() -> str:
    """The public id the gateway answers with and feedback names a request by."""
    return f"req_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class RequestLogEntry:
    """Everything one log row holds, as plain values (ids, not rows), built on the request path."""

    project_id: int
    requested_model: str
    messages: list[dict[str, Any]]
    status: str
    latency_ms: int
    request_id: str = field(default_factory=new_request_id)
    application_key_id: int | None = None
    served_version_id: int | None = None
    experiment_arm: str = ""
    arm_id: int | None = None
    # The answered request's id when this row is a shadow arm's answer (never returned).
    shadow_of: str = ""
    output: str = ""
    error: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # None: the served model has no price; stored as unknown, never as zero.
    cost: Decimal | None = None
    caller_user: str = ""
    # A request its alias's fallback route answered (or failed over to): serving.fallbacks.
    served_base_model_id: int | None = None
    fallback_route_id: int | None = None
    fallback_cause: str = ""
    fallback_reason: str = ""
    created_at: datetime = field(default_factory=timezone.now)


# --- redaction ----------------------------------------------------------------------------------


def redact_text(text: str) -> tuple[str, bool]:
    """``text`` with each piece of personal data the product's detector finds replaced by its
    kind in brackets (``[pii_email]``), and whether anything was replaced."""
    matches = sorted(find_pii(text), key=lambda match: match.start)
    if not matches:
        return text, False
    pieces: list[str] = []
    position = 0
    for match in matches:
        pieces.append(text[position : match.start])
        pieces.append(f"[{match.kind}]")
        position = match.end
    pieces.append(text[position:])
    return "".join(pieces), True


def _redacted_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    changed = False
    cleaned: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            content, masked = redact_text(content)
            changed = changed or masked
            cleaned.append({**message, "content": content})
        else:
            cleaned.append(message)
    return cleaned, changed


Row = dict[str, Any]
"""One request log row as its fields' values by attribute name (``project_id``, not
``project``): the writer builds these, not model instances (``_rows_insert`` says why)."""


def _row_defaults() -> Row:
    """Every column's default: what a row holds where its entry says nothing."""
    return {
        field.attname: field.get_default()
        for field in RequestLog._meta.concrete_fields
        if not field.primary_key
    }


def request_log_row(entry: RequestLogEntry, *, redact: bool, defaults: Row) -> Row:
    """The row for ``entry`` over ``defaults`` (``_row_defaults``); with ``redact``, personal
    data masked first."""
    messages, output, error, redacted = entry.messages, entry.output, entry.error, False
    if redact:
        messages, in_messages = _redacted_messages(entry.messages)
        output, in_output = redact_text(entry.output)
        error, in_error = redact_text(entry.error)
        redacted = in_messages or in_output or in_error
    return {
        **defaults,
        "project_id": entry.project_id,
        "request_id": entry.request_id,
        "application_key_id": entry.application_key_id,
        "requested_model": entry.requested_model,
        "served_version_id": entry.served_version_id,
        "experiment_arm": entry.experiment_arm,
        "arm_id": entry.arm_id,
        "shadow_of": entry.shadow_of,
        "messages": messages,
        "output": output,
        "status": entry.status,
        "error": error,
        "latency_ms": entry.latency_ms,
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "cost": entry.cost,
        "cost_known": entry.cost is not None,
        "caller_user": entry.caller_user,
        "served_base_model_id": entry.served_base_model_id,
        "fallback_route_id": entry.fallback_route_id,
        "fallback_cause": entry.fallback_cause,
        "fallback_reason": entry.fallback_reason,
        "created_at": entry.created_at,
        "redacted": redacted,
    }


# --- feedback posted before its row is stored ---------------------------------------------------

# A Postgres advisory lock (one number for the whole site) that orders the log's writers
# against feedback whose row is not stored yet; see request_log_feedback_lock.
FEEDBACK_BEFORE_ROW_LOCK = 0x66745F6C6F67  # "ft_log"


def request_log_feedback_lock(*, shared: bool) -> None:
    """Take the feedback-before-row lock until the transaction ends: shared by each writer's
    batch, exclusive by feedback that found no row to copy itself onto.

    Feedback copies itself onto its row (``serving.services.feedback_record``), and the writer
    copies feedback already posted onto the rows it inserts. Without this lock both can miss:
    the feedback's UPDATE runs before the writer's INSERT commits (no row to see) while the
    writer's read of the feedback runs before the feedback commits (no feedback to see). With
    it, feedback that found no row waits for the batches being written and looks again, and a
    batch that starts later waits until that feedback is committed, so it reads it. Writers
    never wait for each other (shared), and feedback waits only when it came first.
    """
    if connection.vendor != "postgresql":
        return  # SQLite runs one write transaction at a time: the two cannot interleave
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [FEEDBACK_BEFORE_ROW_LOCK])


def _copy_feedback_posted_first(rows: list[Row]) -> None:
    """Give ``rows`` the feedback already posted on them: an application may send feedback
    on an answer while its row still waits in a writer's queue. One query on the feedback's
    unique (project, request_id) index per batch; nothing found is the usual case."""
    request_log_feedback_lock(shared=True)
    # A shadow arm's row has an id no caller was given: no feedback can name it.
    answered = [row for row in rows if not row["shadow_of"]]
    ids_by_project: dict[int, list[str]] = {}
    for row in answered:
        ids_by_project.setdefault(row["project_id"], []).append(row["request_id"])
    if not ids_by_project:
        return
    wanted = Q()
    for project_id, request_ids in ids_by_project.items():
        wanted |= Q(project_id=project_id, request_id__in=request_ids)
    has_correction = ExpressionWrapper(~Q(correction=""), output_field=BooleanField())
    given = {
        (project_id, request_id): (score, corrected)
        for project_id, request_id, score, corrected in Feedback.objects.filter(wanted)
        .annotate(corrected=has_correction)
        .values_list("project_id", "request_id", "score", "corrected")
    }
    for row in answered:
        found = given.get((row["project_id"], row["request_id"]))
        if found is not None:
            row["feedback_score"], row["feedback_corrected"] = found


def request_logs_write(entries: list[RequestLogEntry]) -> int:
    """Write ``entries`` in one INSERT (redacted when FTPORTAL_REQUEST_LOG_REDACT_PII is on),
    with any feedback already posted on them, priced, their tokens reported to the ledger
    (``serving.spending``)."""
    redact = bool(settings.FTPORTAL_REQUEST_LOG_REDACT_PII)
    defaults = _row_defaults()
    rows = [request_log_row(entry, redact=redact, defaults=defaults) for entry in entries]
    with transaction.atomic():
        _copy_feedback_posted_first(rows)
        serving_rows_priced(rows)
        _rows_insert(rows)
    return len(rows)


def _rows_insert(rows: list[Row]) -> None:
    """Insert ``rows``: on Postgres with COPY, elsewhere (SQLite) with one INSERT.

    The writer runs in the gateway's process, and every millisecond of its CPU is one the
    event loop waits for the GIL. Building a multi-row INSERT through the ORM was a seventh of
    the gateway's samples at 800 requests a second (bench/gateway.py); COPY of model instances'
    field values still took 75 us of CPU a row, half in building the instances and half in the
    fields' conversions, in runs of 10 to 15 ms at a time in which the event loop answered
    nothing. COPY of the values as they are, with only the JSON column wrapped, takes a
    fraction of that: every other column's value is already what psycopg adapts."""
    if not rows:
        return
    database = connections[RequestLog.objects.db]
    if database.vendor != "postgresql":
        RequestLog.objects.bulk_create([RequestLog(**row) for row in rows])
        return
    names = list(rows[0])
    fields = {field.attname: field for field in RequestLog._meta.concrete_fields}
    json_names = {name for name in names if isinstance(fields[name], JSONField)}
    columns = ", ".join(database.ops.quote_name(str(fields[name].column)) for name in names)
    table = database.ops.quote_name(RequestLog._meta.db_table)
    with database.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, under Django's wrapper
        with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [Jsonb(row[name]) if name in json_names else row[name] for name in names]
                )


# --- the writer ---------------------------------------------------------------------------------


class RequestLogWriter:
    """A bounded queue and the thread that empties it in batches.

    The thread starts with the first entry. It writes when ``batch_rows`` rows are waiting or
    ``batch_ms`` after the first of a batch arrived, whichever is first. ``write`` is the
    batch writer (the database by default; tests and the bench may count instead).
    """

    def __init__(
        self,
        *,
        queue_rows: int,
        batch_rows: int,
        batch_ms: int,
        write: Callable[[list[RequestLogEntry]], int] = request_logs_write,
    ) -> None:
        self.queue_rows = max(1, queue_rows)
        self.batch_rows = max(1, batch_rows)
        self.batch_seconds = max(1, batch_ms) / 1000
        self._write = write
        self._queue: queue.Queue[RequestLogEntry] = queue.Queue(maxsize=self.queue_rows)
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self.written = 0

    # The request path: never blocks, never raises.
    def enqueue(self, entry: RequestLogEntry) -> bool:
        """Queue ``entry``; False (and counted) when the queue is full or the writer closed."""
        if not self._stopping.is_set():
            self._ensure_thread()
            try:
                self._queue.put_nowait(entry)
                return True
            except queue.Full:
                pass
        with self._dropped_lock:
            self._dropped += 1
            dropped = self._dropped
        if dropped == 1 or dropped % DROP_LOG_EVERY == 0:
            logger.warning(
                "Request log queue full or closed: %d rows dropped so far (last %s).",
                dropped,
                entry.request_id,
            )
        return False

    @property
    def dropped(self) -> int:
        with self._dropped_lock:
            return self._dropped

    @property
    def queued(self) -> int:
        """Rows queued or being written, not yet stored."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row queued before this call is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            return True
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._queue.all_tasks_done.wait(remaining):
                    return self._queue.unfinished_tasks == 0
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking rows, write everything queued, and stop the thread."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        # Rows that raced the stop, or a writer whose thread never started.
        self._drain()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="request-log-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = self._next_batch()
                if batch:
                    self._write_batch(batch)
            self._drain()
        finally:
            # A thread's database connection is its own; leave none open behind it.
            connections.close_all()

    def _next_batch(self) -> list[RequestLogEntry]:
        try:
            first = self._queue.get(timeout=min(self.batch_seconds, STOP_POLL_SECONDS))
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_seconds
        # The batch window is slept through in short naps (a close is not held up by it), and
        # the rows taken together at its end: taking them as they came woke this thread once
        # a row, a thread switch for every request on the gateway's one GIL (bench/gateway.py).
        while self._queue.qsize() < self.batch_rows - 1 and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._stopping.wait(min(remaining, STOP_POLL_SECONDS))
        batch = [first]
        while len(batch) < self.batch_rows:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _drain(self) -> None:
        while True:
            batch: list[RequestLogEntry] = []
            while len(batch) < self.batch_rows:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            self._write_batch(batch)

    def _write_batch(self, batch: list[RequestLogEntry]) -> None:
        try:
            self.written += self._write(batch)
        except DatabaseError:
            # The rows are lost, not retried forever behind new traffic: counted and logged.
            with self._dropped_lock:
                self._dropped += len(batch)
            logger.exception("Request log: a batch of %d rows could not be written.", len(batch))
            # A broken connection (the database restarted) is opened afresh for the next batch.
            connections.close_all()
        finally:
            for _ in batch:
                self._queue.task_done()


_writer: RequestLogWriter | None = None
_writer_lock = threading.Lock()
_closing_lock = threading.Lock()


def _process_writer() -> RequestLogWriter:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = RequestLogWriter(
                queue_rows=int(settings.FTPORTAL_REQUEST_LOG_QUEUE_ROWS),
                batch_rows=int(settings.FTPORTAL_REQUEST_LOG_BATCH_ROWS),
                batch_ms=int(settings.FTPORTAL_REQUEST_LOG_BATCH_MS),
            )
        return _writer


def request_log_enqueue(entry: RequestLogEntry) -> bool:
    """Hand one request's row to the writer; False when it was dropped (and counted)."""
    queued = _process_writer().enqueue(entry)
    if queued:
        _recently_queued().remember(entry.request_id, entry.project_id)
    return queued


# --- requests answered but maybe not stored yet -------------------------------------------------


class RecentRequests:
    """The projects of the last ``capacity`` request ids this process queued, oldest forgotten
    first: feedback may name an answer whose row is still in the writer's queue."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._projects: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, project_id: int) -> None:
        with self._lock:
            self._projects[request_id] = project_id
            while len(self._projects) > self.capacity:
                self._projects.popitem(last=False)

    def project_of(self, request_id: str) -> int | None:
        with self._lock:
            return self._projects.get(request_id)


_recent: RecentRequests | None = None


def _recently_queued() -> RecentRequests:
    global _recent
    if _recent is not None:  # the request path's case: no lock taken
        return _recent
    with _writer_lock:
        if _recent is None:
            # A row not yet stored is in the queue (at most QUEUE_ROWS rows, first in first
            # out) or in the batch being written (at most BATCH_ROWS), so it is among the
            # last QUEUE_ROWS + BATCH_ROWS ids queued; twice that leaves room for threads
            # that queue and remember in a different order.
            _recent = RecentRequests(
                2
                * (
                    int(settings.FTPORTAL_REQUEST_LOG_QUEUE_ROWS)
                    + int(settings.FTPORTAL_REQUEST_LOG_BATCH_ROWS)
                )
            )
        return _recent


def request_log_recent_project(request_id: str) -> int | None:
    """The project of ``request_id`` if this process queued its row lately (stored or not);
    None otherwise. Covers every row this process queued that is not stored yet."""
    return _recently_queued().project_of(request_id)


def request_log_flush(timeout: float = 30.0) -> bool:
    """Wait until every row queued so far is stored."""
    return _process_writer().flush(timeout)


def request_log_close(timeout: float = 30.0) -> None:
    """Write everything queued and stop the writer; the next entry starts a new one (the
    dropped count starts again with it). Runs at interpreter exit."""
    global _writer
    # One close at a time: a second caller (the server's lifespan and a test's teardown, or
    # two signal handlers) returns only once the first has written what was queued.
    with _closing_lock:
        with _writer_lock:
            writer, _writer = _writer, None
        if writer is not None:
            writer.close(timeout)


def request_log_dropped_count() -> int:
    """Rows this process dropped (queue full, writer closed, or a failed batch)."""
    return _process_writer().dropped


def request_log_queued_count() -> int:
    """Rows waiting to be written in this process."""
    return _process_writer().queued


def request_log_health() -> dict[str, object]:
    """This process's request log for ``/healthz``: rows waiting, the queue's room, and rows
    dropped (queue full, writer closed, a failed batch) since the writer started."""
    writer = _process_writer()
    return {
        "queued": writer.queued,
        "queue_rows": writer.queue_rows,
        "dropped": writer.dropped,
    }


atexit.register(request_log_close)
