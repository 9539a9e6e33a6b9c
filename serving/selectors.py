"""Reads for serving: each application key only within its project, and the request log
browser's filtered, keyset-paginated pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404

from ftportal.errors import ApplicationError
from ftportal.models import Project

from .models import ApplicationKey, RequestLog


def application_keys_of(project: Project) -> QuerySet[ApplicationKey]:
    """The project's keys, live and revoked, newest first, with who created and revoked them."""
    return ApplicationKey.objects.filter(project=project).select_related("created_by", "revoked_by")


def application_key_in_project(project: Project, key_id: int) -> ApplicationKey:
    """One key of the project; 404 for any other id (another project's included, so ids do
    not leak)."""
    return get_object_or_404(application_keys_of(project), pk=key_id)


def application_key_with_prefix(prefix: str) -> ApplicationKey | None:
    """The key a presented prefix names, with its project, whatever the project: the gateway
    learns the project from the key (and checks it against the model asked for)."""
    # The prefix is unique: no ORDER BY (the model's ordering) to compile on every request.
    keys = ApplicationKey.objects.select_related("project").filter(prefix=prefix).order_by()
    return next(iter(keys[:1]), None)


# --- the request log ----------------------------------------------------------------------------

REQUEST_LOG_PAGE_ROWS = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class RequestLogFilters:
    """The browser's filters; empty ones filter nothing."""

    served_version_id: int | None = None
    experiment_arm: str = ""
    status: str = ""
    since: datetime | None = None
    until: datetime | None = None
    # Case-insensitive substring of the messages or the output.
    text: str = ""


@dataclass(frozen=True)
class LogCursor:
    """A row's place in the log's order (newest first; ``id`` breaks equal times)."""

    created_at: datetime
    id: int

    def encoded(self) -> str:
        return f"{(self.created_at - _EPOCH) // _MICROSECOND}-{self.id}"

    @classmethod
    def of(cls, row: RequestLog) -> LogCursor:
        return cls(row.created_at, row.pk)


def log_cursor_parse(raw: str, *, field: str) -> LogCursor:
    """A cursor from a page link (``<microseconds since 1970>-<id>``); a 400 naming ``field``
    for anything else."""
    micros, _, row_id = raw.partition("-")
    if not (micros.isdigit() and row_id.isdigit()) or len(micros) > 18 or len(row_id) > 18:
        raise ApplicationError(
            f"{field}: not a page position from this log.", extra={"field": field}
        )
    return LogCursor(_EPOCH + timedelta(microseconds=int(micros)), int(row_id))


@dataclass(frozen=True)
class RequestLogPage:
    rows: Sequence[RequestLog]
    # Cursors for the older and the newer page; None where there is none.
    older: LogCursor | None
    newer: LogCursor | None


def request_logs_of(project: Project) -> QuerySet[RequestLog]:
    """The project's logged requests, newest first."""
    return RequestLog.objects.filter(project=project).order_by("-created_at", "-id")


def request_logs_in_project(project: Project, request_ids: Sequence[str]) -> QuerySet[RequestLog]:
    """The project's requests among ``request_ids`` (another project's ids match nothing)."""
    return request_logs_of(project).filter(request_id__in=list(request_ids))


def request_logs_filtered(project: Project, filters: RequestLogFilters) -> QuerySet[RequestLog]:
    """The project's requests that pass ``filters``, newest first.

    Version and status each have an index led by (project, that column) in the log's order,
    so a page reads about as many index entries as it shows. Arm and date filter rows read in
    the project's index order. The text search cannot use an index: it reads rows newest
    first until a page is full, cheap for common words and a walk through the project's
    history (within the other filters) for rare ones; narrow the dates to bound it.
    """
    rows = request_logs_of(project).select_related(
        "served_version__registered_model", "application_key"
    )
    if filters.served_version_id is not None:
        rows = rows.filter(served_version_id=filters.served_version_id)
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.experiment_arm:
        rows = rows.filter(experiment_arm=filters.experiment_arm)
    if filters.since is not None:
        rows = rows.filter(created_at__gte=filters.since)
    if filters.until is not None:
        rows = rows.filter(created_at__lt=filters.until)
    if filters.text:
        rows = rows.annotate(messages_text=Cast("messages", TextField())).filter(
            Q(output__icontains=filters.text) | Q(messages_text__icontains=filters.text)
        )
    return rows


def _older_than(cursor: LogCursor) -> Q:
    # (created_at, id) < cursor, spelled so that created_at <= cursor bounds the index scan
    # (an OR alone would leave the planner no range to start from).
    return Q(created_at__lte=cursor.created_at) & (
        Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id)
    )


def _newer_than(cursor: LogCursor) -> Q:
    return Q(created_at__gte=cursor.created_at) & (
        Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id)
    )


def request_log_page(
    rows: QuerySet[RequestLog],
    *,
    older_than: LogCursor | None = None,
    newer_than: LogCursor | None = None,
    size: int = REQUEST_LOG_PAGE_ROWS,
) -> RequestLogPage:
    """One page of ``rows`` (newest first) by keyset, never OFFSET: the rows just older than
    ``older_than``, or just newer than ``newer_than``, or the newest. Each page asks for one
    row more than it shows, to know whether there is a page beyond it."""
    if newer_than is not None:
        upward = list(rows.filter(_newer_than(newer_than)).order_by("created_at", "id")[: size + 1])
        more_newer = len(upward) > size
        shown = list(reversed(upward[:size]))
        return RequestLogPage(
            rows=shown,
            older=LogCursor.of(shown[-1]) if shown else None,
            newer=LogCursor.of(shown[0]) if shown and more_newer else None,
        )
    if older_than is not None:
        rows = rows.filter(_older_than(older_than))
    downward = list(rows[: size + 1])
    shown = downward[:size]
    return RequestLogPage(
        rows=shown,
        older=LogCursor.of(shown[-1]) if len(downward) > size else None,
        newer=LogCursor.of(shown[0]) if shown and older_than is not None else None,
    )
