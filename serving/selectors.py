"""Reads for serving: each application key only within its project, and the request log
browser's filtered, keyset-paginated pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Exists, OuterRef, Q, QuerySet, TextChoices, TextField
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404

from ftportal.errors import ApplicationError
from ftportal.models import Project

from .models import ApplicationKey, Feedback, OutcomeEvent, RequestLog


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
    return ApplicationKey.objects.select_related("project").filter(prefix=prefix).first()


# --- the request log ----------------------------------------------------------------------------

REQUEST_LOG_PAGE_ROWS = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# A score of at least this is positive (a thumbs up is 1, a thumbs down 0).
POSITIVE_SCORE = 0.5


class FeedbackFilter(TextChoices):
    """Which requests the browser shows by the feedback the application posted on them."""

    ANY = "any", "any feedback"
    DOWN = "down", "thumbs down (score below 0.5)"
    UP = "up", "thumbs up (score 0.5 or more)"
    CORRECTED = "corrected", "with a correction"
    NONE = "none", "no feedback"


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
    # A FeedbackFilter value; empty: with or without feedback.
    feedback: str = ""


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


def _with_feedback(project: Project, wanted: str) -> Q:
    """Rows whose feedback is ``wanted`` (a FeedbackFilter value), as an EXISTS on the
    feedback's unique (project, request_id) index."""
    given = Feedback.objects.filter(project=project, request_id=OuterRef("request_id"))
    if wanted == FeedbackFilter.NONE:
        return ~Q(Exists(given))
    if wanted == FeedbackFilter.DOWN:
        given = given.filter(score__lt=POSITIVE_SCORE)
    elif wanted == FeedbackFilter.UP:
        given = given.filter(score__gte=POSITIVE_SCORE)
    elif wanted == FeedbackFilter.CORRECTED:
        given = given.exclude(correction="")
    return Q(Exists(given))


def request_logs_filtered(project: Project, filters: RequestLogFilters) -> QuerySet[RequestLog]:
    """The project's requests that pass ``filters``, newest first.

    Version and status each have an index led by (project, that column) in the log's order,
    so a page reads about as many index entries as it shows. Arm and date filter rows read in
    the project's index order. The text search cannot use an index: it reads rows newest
    first until a page is full, cheap for common words and a walk through the project's
    history (within the other filters) for rare ones; narrow the dates to bound it.

    The feedback filter is an EXISTS (NOT EXISTS for "none") on the feedback's unique
    (project, request_id) index, portable to SQLite. Postgres walks the log newest first and
    probes that index once per row until the page is full (bench/request_log.py prints the
    plan), so a page costs about 50 / (share of requests with that feedback) probes, whatever
    the log's size: cheap for "none" (most requests get no feedback) and for common feedback,
    a long walk for rare feedback (1 request in 200: about 10,000 probes, 0.2 s at a million
    rows on two busy cores); narrow the dates to bound it, as for the text search.
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
    if filters.feedback:
        rows = rows.filter(_with_feedback(project, filters.feedback))
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


# --- outcomes -----------------------------------------------------------------------------------


def request_log_project_id(request_id: str) -> int | None:
    """The project of the stored request ``request_id``, whichever it is; None when no row
    has that id (yet: rows are stored in batches after the answer)."""
    return (
        RequestLog.objects.filter(request_id=request_id)
        .values_list("project_id", flat=True)
        .first()
    )


@dataclass(frozen=True)
class RequestOutcomes:
    """What the application reported about one request: its feedback and its events."""

    feedback: Feedback | None
    events: Sequence[OutcomeEvent]


def request_outcomes(project: Project, request_ids: Sequence[str]) -> dict[str, RequestOutcomes]:
    """The feedback and events of the project's requests among ``request_ids`` (a page's),
    in two queries on their (project, request_id) indexes; every id has an entry."""
    ids = list(request_ids)
    feedback = {
        given.request_id: given
        for given in Feedback.objects.filter(project=project, request_id__in=ids)
    }
    events: dict[str, list[OutcomeEvent]] = {request_id: [] for request_id in ids}
    for event in OutcomeEvent.objects.filter(project=project, request_id__in=ids).order_by(
        "created_at", "id"
    ):
        events[event.request_id].append(event)
    return {
        request_id: RequestOutcomes(feedback.get(request_id), events[request_id])
        for request_id in ids
    }
