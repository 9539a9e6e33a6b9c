"""The figures of a served alias's traffic, read from the gateway's request log
(``serving.RequestLog``): over one window (:func:`window_figures`, what an alert rule reads over
its window, and the production page's headline) or per hour, day or week of a range
(:func:`figure_series`, the production page's charts), with the alias's promotions and
rollbacks in the range (:func:`alias_changes_between`).

Which requests are an alias's: those whose ``requested_model`` names it, as the gateway
resolves names (``serving.model_names``): ``<project>/<model>/<alias>``, and the short
``<project>/<alias>`` while no other model of the project has that alias (when another has it
now, a short-named request counts where the version that served it is this model's, or this
alias's fallback route answered it). Any percent-encoding the gateway accepts counts too
(``Ticket%20triage/production``), so the names are read from the window's rows and decoded,
never guessed. Pinned names (``<project>/<model>@<n>``) ask for one version, not the alias,
and are not its traffic. A request made under a project's or model's old name (before a
rename) no longer names it.

What counts: ``requests`` are the requests callers were answered (``ok`` and ``fallback``) or
that failed (``error``); refusals (a caller's 4xx: bad input, unknown names) and the shadow
arm's mirrored requests (answered to no one) are left out. Every rate is a share of those
requests, except the answer contract's, which is a share of answered outputs.

Cost: everything countable is counted in the database, in three queries whatever the traffic
or the number of buckets, each reading the window along the log's (project, created_at) index.
The first aggregates the window's rows grouped by the name they asked for (and bucket), which
both finds the alias's names and sums every additive figure; whether a request had an outcome
event is an EXISTS on the events' (project, request_id) index, one probe a row. The second
takes the latency percentiles of the alias's rows (Postgres's ``percentile_cont``; computed from
the values elsewhere: SQLite, the embedded default, has no ordered-set aggregates). The third
reads answers for the contract, which takes Python per answer, so only a sample: the most
recent ``CONTRACT_SAMPLE`` answers of a window (or of each bucket, about as many in all), and
only when a version of the model has a contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import unquote

from django.db import connection
from django.db.models import (
    Aggregate,
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber, Trunc

from datasets.contracts import ContractCheck
from evaluation.contracts import contract_of
from registry.models import Alias, AliasChange, ModelVersion, RegisteredModel
from serving.model_names import PINNED_MARK, SEPARATOR
from serving.models import OutcomeEvent, RequestLog, RequestStatus

Bucket = Literal["hour", "day", "week"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day", "week")
BUCKET_LENGTH: dict[Bucket, timedelta] = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}

# Answers checked against the contract per window (the most recent), and at least this many
# per bucket of a series: the check is Python per answer.
CONTRACT_SAMPLE = 2000
CONTRACT_SAMPLE_PER_BUCKET_MIN = 20
CONTRACT_LABEL = (
    f"Answers within the contract (of the most recent {CONTRACT_SAMPLE:,} answers checked)"
)

ANSWERED = (RequestStatus.OK, RequestStatus.FALLBACK)
COUNTED = (*ANSWERED, RequestStatus.ERROR)


# --- the figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """The additive part of an alias's figures: sums that add across names and buckets."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    answered: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    feedback_count: int = 0
    feedback_sum: float = 0.0
    successes: int = 0

    def plus(self, other: Counts) -> Counts:
        return Counts(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            fallbacks=self.fallbacks + other.fallbacks,
            answered=self.answered + other.answered,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced=self.unpriced + other.unpriced,
            feedback_count=self.feedback_count + other.feedback_count,
            feedback_sum=self.feedback_sum + other.feedback_sum,
            successes=self.successes + other.successes,
        )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class WindowFigures:
    """An alias's traffic over one window. Each field named as a ``monitoring.models.Figure``
    value is that figure (read them by name with :meth:`figure`); a rate or a mean is None
    where nothing was there to divide (no request, no feedback, no answer under a contract),
    never 0.

    ``cost_usd`` sums the requests with a known price; ``unpriced`` counts the answered ones
    without (a hosted model with no price, or a version answering on our own hardware, whose
    machine time the ledger holds): the sum is never read as the whole cost when it is not.
    ``contract_validity`` is over ``contract_checked`` answers, the most recent of the window
    (see ``CONTRACT_LABEL``); None when no served version's dataset has a contract.
    """

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    answered: int = 0
    error_rate: float | None = None
    fallback_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    feedback_count: int = 0
    feedback_rate: float | None = None
    feedback_score: float | None = None
    successes: int = 0
    success_rate: float | None = None
    contract_checked: int = 0
    contract_valid: int = 0
    contract_validity: float | None = None

    @classmethod
    def of(
        cls,
        counts: Counts,
        latency: tuple[float | None, float | None] = (None, None),
        contract: tuple[int, int] = (0, 0),
    ) -> WindowFigures:
        """The figures of ``counts``, the latency's (p50, p95) and the contract's (checked,
        valid)."""
        checked, valid = contract
        return cls(
            requests=counts.requests,
            errors=counts.errors,
            fallbacks=counts.fallbacks,
            answered=counts.answered,
            error_rate=_share(counts.errors, counts.requests),
            fallback_rate=_share(counts.fallbacks, counts.requests),
            latency_p50_ms=latency[0],
            latency_p95_ms=latency[1],
            cost_usd=counts.cost_usd,
            unpriced=counts.unpriced,
            feedback_count=counts.feedback_count,
            feedback_rate=_share(counts.feedback_count, counts.requests),
            feedback_score=(
                counts.feedback_sum / counts.feedback_count if counts.feedback_count else None
            ),
            successes=counts.successes,
            success_rate=_share(counts.successes, counts.requests),
            contract_checked=checked,
            contract_valid=valid,
            contract_validity=_share(valid, checked),
        )

    def figure(self, name: str) -> float | None:
        """The figure named ``name`` (a ``monitoring.models.Figure`` value of the request log,
        e.g. ``"error_rate"``) as a number; None where it has no value. KeyError for a name
        that is not one of this window's figures (the drift and budget figures)."""
        if name not in REQUEST_LOG_FIGURES:
            raise KeyError(name)
        value = getattr(self, name)
        return None if value is None else float(value)


# The figures of the request log, by their ``monitoring.models.Figure`` values.
REQUEST_LOG_FIGURES = (
    "requests",
    "error_rate",
    "fallback_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "cost_usd",
    "feedback_rate",
    "feedback_score",
    "success_rate",
    "contract_validity",
)


# --- which requests are the alias's ---------------------------------------------------------


@dataclass(frozen=True)
class AliasTraffic:
    """How the request log names one alias: its project's, model's and alias's names, whether
    another model of the project has the same alias now (then a short name is attributed by
    what served it), and the model's versions with their answer contracts."""

    project_id: int
    project_name: str
    model_name: str
    alias: str
    short_shared: bool
    version_ids: tuple[int, ...]
    route_id: int | None
    current_version_id: int | None
    contracts: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def form_of(self, requested: str) -> Literal["long", "short"] | None:
        """Whether ``requested`` names this alias, long or short (as
        ``serving.model_names.model_name_resolution`` reads a name), else None."""
        raw = requested.split(SEPARATOR)
        parts = [unquote(part) for part in raw]
        if len(parts) == 3 and parts == [self.project_name, self.model_name, self.alias]:
            return "long"
        pinned = len(raw) == 2 and PINNED_MARK in raw[1]
        if not pinned and parts == [self.project_name, self.alias]:
            return "short"
        return None

    def served_by_this_model(self) -> Q:
        """Rows this model's versions served, or this alias's fallback route answered."""
        mine = Q(served_version_id__in=self.version_ids) if self.version_ids else Q(pk__in=[])
        if self.route_id is not None:
            mine |= Q(fallback_route_id=self.route_id)
        return mine

    def rows_named(self, long_names: Sequence[str], short_names: Sequence[str]) -> Q:
        """The alias's rows among those named ``long_names`` or ``short_names``."""
        wanted = Q(requested_model__in=list(long_names)) if long_names else Q(pk__in=[])
        if short_names:
            short = Q(requested_model__in=list(short_names))
            wanted |= (short & self.served_by_this_model()) if self.short_shared else short
        return wanted


def alias_traffic(*, registered_model: RegisteredModel, alias: str) -> AliasTraffic:
    """What :class:`AliasTraffic` needs, in two queries (and the project's, unless loaded)."""
    project = registered_model.project
    same_name = list(
        Alias.objects.filter(registered_model__project_id=project.pk, name=alias)
        .order_by()
        .values_list("registered_model_id", "model_version_id", "fallback_route__id")
    )
    own = next((row for row in same_name if row[0] == registered_model.pk), None)
    others = [row for row in same_name if row[0] != registered_model.pk]
    versions = (
        ModelVersion.objects.filter(registered_model=registered_model)
        .select_related("dataset_version")
        .only("pk", "dataset_version__answer_contract")
        .order_by()
    )
    contracts: dict[int, Mapping[str, Any]] = {}
    version_ids: list[int] = []
    for version in versions:
        version_ids.append(version.pk)
        contract = contract_of(version.dataset_version)
        if contract:
            contracts[version.pk] = contract
    return AliasTraffic(
        project_id=project.pk,
        project_name=project.name,
        model_name=registered_model.name,
        alias=alias,
        short_shared=bool(others),
        version_ids=tuple(version_ids),
        route_id=own[2] if own else None,
        current_version_id=own[1] if own else None,
        contracts=contracts,
    )


def _window_rows(traffic: AliasTraffic, since: datetime, until: datetime) -> QuerySet[RequestLog]:
    """The project's counted rows in [since, until): along its (project, created_at) index."""
    return RequestLog.objects.filter(
        project_id=traffic.project_id,
        created_at__gte=since,
        created_at__lt=until,
        shadow_of="",
        status__in=COUNTED,
    ).order_by()


# --- the aggregates -------------------------------------------------------------------------


class Percentile(Aggregate):
    """Postgres's continuous percentile (``percentile_cont``) of an expression: the same
    linear interpolation as numpy's default."""

    function = "percentile_cont"
    name = "Percentile"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, *, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile's fraction is within [0, 1]")
        super().__init__(expression, fraction=repr(float(fraction)))


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """``fraction``'s percentile of sorted ``values`` by linear interpolation, as
    ``percentile_cont`` (for databases without it); None for no values."""
    if not values:
        return None
    place = fraction * (len(values) - 1)
    low = math.floor(place)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (place - low))


def _count_aggregates(project_id: int) -> dict[str, Any]:
    has_event = Exists(
        OutcomeEvent.objects.filter(project_id=project_id, request_id=OuterRef("request_id"))
    )
    return {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status=RequestStatus.ERROR)),
        "fallbacks": Count("id", filter=Q(status=RequestStatus.FALLBACK)),
        "answered": Count("id", filter=Q(status__in=ANSWERED)),
        "cost_usd": Sum("cost", filter=Q(cost_known=True)),
        "unpriced": Count("id", filter=Q(status__in=ANSWERED, cost_known=False)),
        "feedback_count": Count("feedback_score"),
        "feedback_sum": Sum("feedback_score"),
        "successes": Count("id", filter=Q(has_event)),
    }


def _counts_of(row: Mapping[str, Any]) -> Counts:
    return Counts(
        requests=row["requests"],
        errors=row["errors"],
        fallbacks=row["fallbacks"],
        answered=row["answered"],
        cost_usd=Decimal(row["cost_usd"] or 0),
        unpriced=row["unpriced"],
        feedback_count=row["feedback_count"],
        feedback_sum=float(row["feedback_sum"] or 0.0),
        successes=row["successes"],
    )


@dataclass(frozen=True)
class _Named:
    """The alias's counts per bucket (None: the whole window) and the names its rows carry."""

    counts: dict[datetime | None, Counts]
    long_names: tuple[str, ...]
    short_names: tuple[str, ...]

    @property
    def found(self) -> bool:
        return bool(self.long_names or self.short_names)


def _bucket_of(bucket: Bucket) -> Trunc:
    return Trunc("created_at", bucket, tzinfo=UTC)


def _named_counts(
    traffic: AliasTraffic, rows: QuerySet[RequestLog], bucket: Bucket | None
) -> _Named:
    """One aggregate of the window's rows grouped by the name they asked for (and bucket, and
    for a shared short name, whether this model served them); kept: the alias's."""
    keys = ["requested_model"]
    if bucket is not None:
        rows = rows.annotate(bucket=_bucket_of(bucket))
        keys.append("bucket")
    if traffic.short_shared:
        rows = rows.annotate(
            mine=Case(
                When(traffic.served_by_this_model(), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            )
        )
        keys.append("mine")
    counts: dict[datetime | None, Counts] = {}
    long_names: set[str] = set()
    short_names: set[str] = set()
    for row in rows.values(*keys).annotate(**_count_aggregates(traffic.project_id)):
        form = traffic.form_of(row["requested_model"])
        if form is None or (form == "short" and traffic.short_shared and not row["mine"]):
            continue
        (long_names if form == "long" else short_names).add(row["requested_model"])
        when = row.get("bucket")
        counts[when] = counts.get(when, Counts()).plus(_counts_of(row))
    return _Named(counts, tuple(sorted(long_names)), tuple(sorted(short_names)))


Latency = tuple[float | None, float | None]


def _latencies(rows: QuerySet[RequestLog], bucket: Bucket | None) -> dict[datetime | None, Latency]:
    """The p50 and p95 latency of ``rows`` (per bucket): in Postgres, or from the sorted
    values elsewhere."""
    if connection.vendor == "postgresql":
        aggregates = {
            "p50": Percentile("latency_ms", fraction=0.5),
            "p95": Percentile("latency_ms", fraction=0.95),
        }
        if bucket is None:
            found = rows.aggregate(**aggregates)
            return {None: (found["p50"], found["p95"])}
        grouped = rows.annotate(bucket=_bucket_of(bucket)).values("bucket").annotate(**aggregates)
        found_rows: Iterable[Mapping[str, Any]] = grouped
        return {row["bucket"]: (row["p50"], row["p95"]) for row in found_rows}
    values: dict[datetime | None, list[float]] = {}
    if bucket is None:
        values[None] = [float(v) for v in rows.values_list("latency_ms", flat=True)]
    else:
        for when, latency in rows.annotate(bucket=_bucket_of(bucket)).values_list(
            "bucket", "latency_ms"
        ):
            values.setdefault(when, []).append(float(latency))
    return {
        when: (percentile(sorted(found), 0.5), percentile(sorted(found), 0.95))
        for when, found in values.items()
    }


def _contract_counts(
    traffic: AliasTraffic, answers: Iterable[tuple[datetime | None, int | None, str]]
) -> dict[datetime | None, tuple[int, int]]:
    """(checked, valid) per bucket of ``answers`` (bucket, served version, output): each
    against its version's contract, the alias's current version's for an answer a base model
    gave (a fallback route's); an answer with no contract is not checked."""
    checks = {pk: ContractCheck(contract) for pk, contract in traffic.contracts.items()}
    found: dict[datetime | None, tuple[int, int]] = {}
    for when, version_id, output in answers:
        check = checks.get(version_id if version_id is not None else -1)
        if check is None and version_id is None and traffic.current_version_id is not None:
            check = checks.get(traffic.current_version_id)
        if check is None:
            continue
        checked, valid = found.get(when, (0, 0))
        found[when] = (checked + 1, valid + (check.violation(output) is None))
    return found


def _contract_sample(
    traffic: AliasTraffic, rows: QuerySet[RequestLog], bucket: Bucket | None, buckets: int
) -> dict[datetime | None, tuple[int, int]]:
    """The contract's (checked, valid) over the most recent answers (per bucket)."""
    if not traffic.contracts:
        return {}
    answered = rows.filter(status__in=ANSWERED)
    newest_first = [F("created_at").desc(), F("id").desc()]
    if bucket is None:
        sample = answered.order_by(*newest_first).values_list("served_version_id", "output")
        return _contract_counts(
            traffic, ((None, version, output) for version, output in sample[:CONTRACT_SAMPLE])
        )
    per_bucket = max(CONTRACT_SAMPLE_PER_BUCKET_MIN, math.ceil(CONTRACT_SAMPLE / max(buckets, 1)))
    ranked = (
        answered.annotate(
            bucket=_bucket_of(bucket),
            rank=Window(RowNumber(), partition_by=[_bucket_of(bucket)], order_by=newest_first),
        )
        .filter(rank__lte=per_bucket)
        .values_list("bucket", "served_version_id", "output")
    )
    return _contract_counts(traffic, ranked)


# --- windows and series ---------------------------------------------------------------------


def _figures_of(
    traffic: AliasTraffic,
    since: datetime,
    until: datetime,
    bucket: Bucket | None,
    buckets: int = 1,
) -> dict[datetime | None, WindowFigures]:
    rows = _window_rows(traffic, since, until)
    named = _named_counts(traffic, rows, bucket)
    if not named.found:
        return {}
    mine = rows.filter(traffic.rows_named(named.long_names, named.short_names))
    latencies = _latencies(mine, bucket)
    contract = _contract_sample(traffic, mine, bucket, buckets)
    return {
        when: WindowFigures.of(
            counts, latencies.get(when, (None, None)), contract.get(when, (0, 0))
        )
        for when, counts in named.counts.items()
    }


def window_figures(
    *, registered_model: RegisteredModel, alias: str, since: datetime, until: datetime
) -> WindowFigures:
    """The figures of the alias's requests from ``since`` (included) to ``until`` (left out).

    A fixed few queries whatever the traffic: the alias's names and versions (two), one
    aggregate of the window's rows by name, the latency percentiles of the alias's rows, and,
    where a served version has an answer contract, the most recent answers checked against
    it (``CONTRACT_SAMPLE``). Each reads the window along the log's (project, created_at)
    index; a window of no traffic reads nothing more after the aggregate."""
    traffic = alias_traffic(registered_model=registered_model, alias=alias)
    return _figures_of(traffic, since, until, None).get(None, WindowFigures())


def bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    """The start (UTC) of the hour, day or week (from Monday, as Postgres's date_trunc)
    that holds ``moment``."""
    utc = moment.astimezone(UTC)
    if bucket == "hour":
        return utc.replace(minute=0, second=0, microsecond=0)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if bucket == "day" else day - timedelta(days=day.weekday())


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    """Every bucket that overlaps [since, until), oldest first."""
    starts: list[datetime] = []
    current = bucket_start(since, bucket)
    while current < until:
        starts.append(current)
        current = bucket_start(current + BUCKET_LENGTH[bucket], bucket)
    return starts


def figure_series(
    *,
    registered_model: RegisteredModel,
    alias: str,
    since: datetime,
    until: datetime,
    bucket: Bucket,
) -> list[tuple[datetime, WindowFigures]]:
    """Each bucket of [since, until) (its start, in UTC) with the alias's figures in it (the
    first and last cut at ``since`` and ``until``); a bucket without requests has zero counts
    and no rates. The same queries as :func:`window_figures`, each grouped by bucket: their
    number does not grow with the buckets'. The contract is checked on the most recent
    answers of each bucket (at least ``CONTRACT_SAMPLE_PER_BUCKET_MIN``, about
    ``CONTRACT_SAMPLE`` in all)."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket: one of {', '.join(BUCKETS)}")
    starts = bucket_starts(since, until, bucket)
    traffic = alias_traffic(registered_model=registered_model, alias=alias)
    found = _figures_of(traffic, since, until, bucket, buckets=len(starts))
    return [(start, found.get(start, WindowFigures())) for start in starts]


# --- promotions and rollbacks ---------------------------------------------------------------


def alias_changes_between(
    *, registered_model: RegisteredModel, alias: str, since: datetime, until: datetime
) -> list[AliasChange]:
    """The alias's promotions and rollbacks from ``since`` to ``until``, oldest first, with
    the versions and who made each."""
    return list(
        AliasChange.objects.filter(
            registered_model=registered_model,
            alias=alias,
            created_at__gte=since,
            created_at__lt=until,
        )
        .select_related("from_version", "to_version", "changed_by")
        .order_by("created_at", "id")
    )
