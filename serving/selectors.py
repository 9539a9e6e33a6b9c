"""Reads for serving: each application key only within its project, the request log
browser's filtered, keyset-paginated pages, and the fallback routes with their counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    Count,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    TextChoices,
)
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.utils import timezone

from evaluation.statistics import (
    VerdictOutcome,
    compare_rates,
    decide_rates,
    mean_interval,
    wilson_interval,
)
from ftportal.errors import ApplicationError
from ftportal.models import Project
from registry.models import Alias

from .models import (
    ApplicationKey,
    Experiment,
    ExperimentArm,
    FallbackCause,
    FallbackRoute,
    Feedback,
    OutcomeEvent,
    RequestLog,
    RequestStatus,
    request_log_search_text,
)


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


# A score of at least this is positive (a thumbs up is 1, a thumbs down 0).
POSITIVE_SCORE = 0.5


class FeedbackFilter(TextChoices):
    """Which requests the browser shows by the feedback the application posted on them."""

    ANY = "any", "any feedback"
    DOWN = "down", "thumbs down (score below 0.5)"
    UP = "up", "thumbs up (score 0.5 or more)"
    CORRECTED = "corrected", "with a correction"
    NONE = "none", "no feedback"


class TrafficFilter(TextChoices):
    """Which rows the browser shows by who got the answer: the shadow arm's mirrored requests
    (``RequestLog.shadow_of`` set) were answered to no one."""

    ANSWERED = "answered", "answered to callers"
    SHADOW = "shadow", "shadow arm's mirrors only"
    ALL = "all", "answered and shadow"


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
    # A TrafficFilter value: by default what callers were answered, as they saw it.
    traffic: str = TrafficFilter.ANSWERED


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


def _with_feedback(wanted: str) -> Q:
    """Rows whose feedback is ``wanted`` (a FeedbackFilter value), read from the score and
    correction flag copied onto each row (``RequestLog.feedback_score``)."""
    if wanted == FeedbackFilter.NONE:
        return Q(feedback_score__isnull=True)
    if wanted == FeedbackFilter.DOWN:
        return Q(feedback_score__lt=POSITIVE_SCORE)
    if wanted == FeedbackFilter.UP:
        return Q(feedback_score__gte=POSITIVE_SCORE)
    if wanted == FeedbackFilter.CORRECTED:
        return Q(feedback_score__isnull=False, feedback_corrected=True)
    return Q(feedback_score__isnull=False)


def _with_traffic(wanted: str) -> Q:
    """Rows of ``wanted`` traffic (a TrafficFilter value)."""
    if wanted == TrafficFilter.SHADOW:
        return ~Q(shadow_of="")
    if wanted == TrafficFilter.ALL:
        return Q()
    return Q(shadow_of="")


def request_logs_filtered(project: Project, filters: RequestLogFilters) -> QuerySet[RequestLog]:
    """The project's requests that pass ``filters``, newest first.

    Each filter but the text search has an index in the log's order, so a first or a deeper
    keyset page reads about as many index entries as it shows, at any size of log
    (bench/request_log.py: 10 million rows): version and status each lead one with (project,
    that column); the arm, the shadow rows and the rows with feedback each have a partial
    index of only their rows, and the feedback's score and correction flag are checked on
    its entries. Dates bound whichever index is read. "Answered to callers" (the default) and
    "no feedback" keep nearly every row, so they filter rows read in the project's order.

    The text search (``request_log_search_text``, case-insensitive): on Postgres a rare word's
    rows come from the trigram index ``request_log_text_search`` and are sorted, while a
    common word's page fills within the first rows of the project's index, whichever Postgres
    prices lower; elsewhere it reads rows newest first until a page is full.
    """
    rows = request_logs_of(project).select_related(
        "served_version__registered_model", "served_base_model", "application_key"
    )
    rows = rows.filter(_with_traffic(filters.traffic))
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
        rows = rows.filter(_with_feedback(filters.feedback))
    if filters.text:
        rows = rows.annotate(search_text=request_log_search_text()).filter(
            search_text__icontains=filters.text
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


# --- experiments --------------------------------------------------------------------------------


def experiments_of(project: Project) -> QuerySet[Experiment]:
    """The project's experiments, newest first, with their model and arms."""
    arms = ExperimentArm.objects.select_related(
        "model_version__registered_model", "base_model"
    ).order_by("position")
    return (
        Experiment.objects.filter(project=project)
        .select_related("registered_model", "created_by", "ended_by", "promoted_version")
        .prefetch_related(Prefetch("arms", queryset=arms))
    )


def experiment_in_project(project: Project, experiment_id: int) -> Experiment:
    """One experiment of the project; 404 for any other id."""
    return get_object_or_404(experiments_of(project), pk=experiment_id)


@dataclass(frozen=True)
class Interval:
    """A figure with its 95 % interval."""

    value: float
    low: float
    high: float

    @property
    def percent_text(self) -> str:
        return f"{self.value * 100:.1f} % (95 % CI {self.low * 100:.1f} to {self.high * 100:.1f})"

    @property
    def score_text(self) -> str:
        return f"{self.value:.2f} (95 % CI {self.low:.2f} to {self.high:.2f})"


@dataclass(frozen=True)
class ArmResult:
    """One arm's traffic as the request log and the application's outcomes say.

    ``requests`` counts the arm's rows: answered requests for an answering arm, mirrored ones
    for the shadow arm (never counted among the answered). ``success`` is the share of
    requests with at least one success event (None with no request), ``feedback`` the mean
    feedback score (None with no feedback). Cost per 1,000 requests is None when any request
    of the arm is unpriced: shown as "unpriced", never as 0.
    """

    arm: ExperimentArm
    requests: int
    errors: int
    successes: int
    success: Interval | None
    feedback_count: int
    feedback: Interval | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_per_1000: Decimal | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


# One pass over the experiment's rows (the partial index request_log_by_arm finds them), hash
# joined with the project's requests that had the success event (each once: a request with two
# events is one success) and with their feedback (one per request), as the planner prefers:
# a per-row EXISTS would be a sub-plan run once per request.
_ARM_RESULTS_SQL = """
SELECT r.arm_id,
       COUNT(*),
       COUNT(*) FILTER (WHERE r.status = %(error)s),
       COUNT(s.request_id),
       COUNT(f.score),
       AVG(f.score),
       VAR_SAMP(f.score),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms),
       COUNT(*) FILTER (WHERE NOT r.cost_known),
       SUM(r.cost)
FROM {log} r
LEFT JOIN (
    SELECT DISTINCT e.request_id FROM {events} e
    WHERE e.project_id = %(project)s AND e.name = %(event)s
) s ON s.request_id = r.request_id
LEFT JOIN {feedback} f ON f.project_id = %(project)s AND f.request_id = r.request_id
WHERE r.arm_id = ANY(%(arms)s) AND r.project_id = %(project)s
GROUP BY r.arm_id
"""


def _interval_of_rate(successes: int, trials: int) -> Interval | None:
    if trials == 0:
        return None
    low, high = wilson_interval(successes, trials)
    return Interval(successes / trials, low, high)


def _interval_of_mean(count: int, mean: float | None, variance: float | None) -> Interval | None:
    if count == 0 or mean is None:
        return None
    low, high = mean_interval(count, float(mean), float(variance or 0.0))
    return Interval(float(mean), max(0.0, low), min(1.0, high))


def experiment_arm_results(experiment: Experiment) -> list[ArmResult]:
    """Every arm's figures, in arm order, from one aggregate query however many requests."""
    arms = list(experiment.arms.all())
    sql = _ARM_RESULTS_SQL.format(
        events=OutcomeEvent._meta.db_table,
        log=RequestLog._meta.db_table,
        feedback=Feedback._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "error": RequestStatus.ERROR,
                "event": experiment.success_event,
                "project": experiment.project_id,
                "arms": [arm.pk for arm in arms],
            },
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    results = []
    for arm in arms:
        found = rows.get(arm.pk)
        if found is None:
            found = (0, 0, 0, 0, None, None, None, None, 0, None)
        requests, errors, successes, scored, mean, variance, p50, p95, unpriced, cost = found
        per_1000 = None
        if requests and not unpriced and cost is not None:
            per_1000 = (Decimal(cost) * 1000 / requests).quantize(Decimal("0.0001"))
        results.append(
            ArmResult(
                arm=arm,
                requests=requests,
                errors=errors,
                successes=successes,
                success=_interval_of_rate(successes, requests),
                feedback_count=scored,
                feedback=_interval_of_mean(scored, mean, variance),
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                cost_per_1000=per_1000,
            )
        )
    return results


@dataclass(frozen=True)
class ExperimentVerdict:
    """What the success metric says: ``winner`` is the answering arm that beats every other
    answering arm by the one rule, None while the evidence is not enough."""

    winner: ExperimentArm | None
    sentence: str
    rule: str = ""


def experiment_verdict(experiment: Experiment, results: Sequence[ArmResult]) -> ExperimentVerdict:
    """The verdict sentence on the success metric: the leading answering arm (by success rate)
    against each other answering arm, unpaired (``evaluation.statistics.decide_rates``)."""
    label = f"{experiment.success_event} success rate"
    answering = [result for result in results if not result.arm.is_shadow]
    measured = [result for result in answering if result.requests > 0]
    if len(answering) < 2:
        return ExperimentVerdict(None, "There is one answering arm: nothing to compare.")
    if len(measured) < len(answering):
        waiting = ", ".join(r.arm.name for r in answering if r.requests == 0)
        return ExperimentVerdict(
            None, f"Not enough evidence yet: no requests served by {waiting} so far."
        )
    leader = max(
        measured, key=lambda result: (result.successes / result.requests, -result.arm.position)
    )
    decisions = [
        decide_rates(
            compare_rates(leader.successes, leader.requests, other.successes, other.requests)
        )
        for other in measured
        if other is not leader
    ]
    others = [other for other in measured if other is not leader]
    rule = decisions[0].rule
    if all(decision.outcome == VerdictOutcome.BETTER for decision in decisions):
        said = "; ".join(
            decision.sentence(leader.arm.name, other.arm.name, label)
            for decision, other in zip(decisions, others, strict=True)
        )
        return ExperimentVerdict(leader.arm, f"{leader.arm.name} wins: {said}.", rule)
    # The comparison the leader is least sure of says why there is no winner yet.
    weakest, rival = max(
        zip(decisions, others, strict=True), key=lambda pair: pair[0].comparison.p_value
    )
    said = weakest.sentence(leader.arm.name, rival.arm.name, label)
    return ExperimentVerdict(None, f"Not enough evidence yet: {said}.", rule)


# --- fallback routes ----------------------------------------------------------------------------

FALLBACK_COUNT_WINDOW = timedelta(hours=24)


def _route_log_subquery(since: datetime, *, value: Any, **conditions: Any) -> Subquery:
    """One figure of each route's log rows since ``since`` (a correlated subquery on the
    log's (project, status, created_at) index: fallbacks and errors are the rare rows)."""
    rows = (
        RequestLog.objects.filter(
            fallback_route=OuterRef("pk"),
            project=OuterRef("alias__registered_model__project"),
            created_at__gte=since,
            **conditions,
        )
        .order_by()
        .values("fallback_route")
        .annotate(figure=value)
        .values("figure")
    )
    return Subquery(rows)


def fallback_routes_of(project: Project, *, now: datetime | None = None) -> QuerySet[FallbackRoute]:
    """The project's fallback routes, by model and alias, with their alias, targets and who
    last set them, and their last 24 hours from the request log (every gateway process's
    requests): ``fallbacks_last_24h`` answered by the route, ``circuit_open_last_24h`` of them
    without asking the primary (its breaker was open), ``failed_too_last_24h`` failed on the
    route as well, ``latest_fallback_at``."""
    since = (now or timezone.now()) - FALLBACK_COUNT_WINDOW
    fallback = {"status": RequestStatus.FALLBACK}
    return (
        FallbackRoute.objects.filter(alias__registered_model__project=project)
        .select_related(
            "alias__registered_model",
            "alias__model_version",
            "fallback_version",
            "fallback_base_model",
            "updated_by",
        )
        .annotate(
            fallbacks_last_24h=Coalesce(
                _route_log_subquery(since, value=Count("id"), **fallback), 0
            ),
            circuit_open_last_24h=Coalesce(
                _route_log_subquery(
                    since, value=Count("id"), fallback_cause=FallbackCause.CIRCUIT_OPEN, **fallback
                ),
                0,
            ),
            failed_too_last_24h=Coalesce(
                _route_log_subquery(since, value=Count("id"), status=RequestStatus.ERROR), 0
            ),
            latest_fallback_at=_route_log_subquery(since, value=Max("created_at"), **fallback),
        )
    )


def fallback_route_in_project(project: Project, route_id: int) -> FallbackRoute:
    """One route of the project; 404 for any other id (another project's included)."""
    return get_object_or_404(fallback_routes_of(project), pk=route_id)


def aliases_of(project: Project) -> QuerySet[Alias]:
    """Every alias of the project's registered models (what a route may be set on), with the
    version it serves now."""
    return (
        Alias.objects.filter(registered_model__project=project)
        .select_related("registered_model", "model_version")
        .order_by("registered_model__name", "name")
    )


def route_alias_in_project(project: Project, model_id: int, alias_name: str) -> Alias | None:
    """The alias ``alias_name`` of the project's registered model ``model_id``, or None."""
    return aliases_of(project).filter(registered_model_id=model_id, name=alias_name).first()
