"""What the managers' dashboard reads: spend per month, kind and project, the top cost drivers,
unpriced spends, and for each production model its traffic, what that traffic would have cost
with the alternative its evaluation weighed, and whether the fine-tune has paid back.

Spend is read from the ledger's daily sums (``LedgerDay``), which the ledger writes with each
row: a few hundred thousand day rows where the ledger holds millions (bench/costs.py measures
both). The CSV export reads the ledger rows themselves.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth, TruncWeek

from evaluation.advice import PricedAlternative, priced_alternatives
from evaluation.models import Candidate, EvalRun, EvalStatus
from evaluation.scoring import METRICS
from ftportal.models import Membership, Project
from ftportal.roles import ALLOWED_ROLES, Action
from ftportal.spending import AMOUNT_PLACES, SpendKind
from registry.models import PRODUCTION_ALIAS, Alias, ModelVersion
from serving.models import RequestLog, RequestStatus

from .models import LedgerDay, LedgerEntry

AnyUser = AbstractBaseUser | AnonymousUser
ZERO = Decimal(0)
# What counts as the investment in a fine-tune: everything but serving it.
INVESTMENT_KINDS = (
    SpendKind.TRAINING,
    SpendKind.EVALUATION,
    SpendKind.JUDGING,
    SpendKind.DATA_PREPARATION,
)
# Requests that were answered to someone: what the alternative would also have answered.
ANSWERED = (RequestStatus.OK, RequestStatus.FALLBACK)


def cost_projects(user: AnyUser) -> list[Project]:
    """The projects whose costs ``user`` may read: a site admin (superuser) reads all; a
    member reads those where their role allows Action.READ_COSTS."""
    if not user.is_authenticated:
        return []
    if getattr(user, "is_superuser", False):
        return list(Project.objects.order_by("name"))
    roles = [role.value for role in ALLOWED_ROLES[Action.READ_COSTS]]
    project_ids = Membership.objects.filter(user_id=user.pk, role__in=roles).values("project_id")
    return list(Project.objects.filter(pk__in=project_ids).order_by("name"))


@dataclass(frozen=True)
class CostFilter:
    """The projects in view (already checked: ``cost_projects``) and the days, both ends
    included, UTC."""

    project_ids: tuple[int, ...]
    start: dt.date
    end: dt.date

    @property
    def moments(self) -> tuple[dt.datetime, dt.datetime]:
        """The first moment of ``start`` and the first moment after ``end`` (UTC)."""
        first = dt.datetime.combine(self.start, dt.time(), tzinfo=dt.UTC)
        after = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return first, after


def _days(chosen: CostFilter) -> QuerySet[LedgerDay]:
    return LedgerDay.objects.filter(
        project_id__in=chosen.project_ids, day__gte=chosen.start, day__lte=chosen.end
    )


def ledger_entries(chosen: CostFilter) -> QuerySet[LedgerEntry]:
    """The ledger rows in view, oldest first (the CSV export)."""
    first, after = chosen.moments
    return (
        LedgerEntry.objects.filter(
            project_id__in=chosen.project_ids, occurred_at__gte=first, occurred_at__lt=after
        )
        .select_related("project")
        .order_by("occurred_at", "id")
    )


# --- totals ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendSum:
    """Priced spend in dollars, and how many spends had no price (never summed as $0)."""

    amount: Decimal
    entries: int
    unpriced_entries: int


def _sum(row: Mapping[str, Any]) -> SpendSum:
    amount = row.get("spent")
    return SpendSum(
        amount=Decimal(str(amount)).quantize(AMOUNT_PLACES) if amount is not None else ZERO,
        entries=int(str(row.get("spends") or 0)),
        unpriced_entries=int(str(row.get("unpriced") or 0)),
    )


# Named apart from the day rows' own fields: an annotation may not shadow a field.
_SUMS = {
    "spent": Sum("amount"),
    "spends": Sum("entries"),
    "unpriced": Sum("unpriced_entries"),
}


def spend_total(chosen: CostFilter) -> SpendSum:
    return _sum(_days(chosen).aggregate(**_SUMS))


@dataclass(frozen=True)
class MonthSpend:
    month: dt.date
    kind: str
    spend: SpendSum


def spend_by_month_and_kind(chosen: CostFilter) -> list[MonthSpend]:
    rows = (
        _days(chosen)
        .annotate(month=TruncMonth("day"))
        .values("month", "kind")
        .annotate(**_SUMS)
        .order_by("month", "kind")
    )
    return [MonthSpend(month=row["month"], kind=row["kind"], spend=_sum(row)) for row in rows]


@dataclass(frozen=True)
class ProjectSpend:
    project: Project
    total: SpendSum
    by_kind: dict[str, SpendSum]

    @property
    def kind_amounts(self) -> list[Decimal | None]:
        """The amount of each kind, in SpendKind's order; None where it spent nothing."""
        return [self.by_kind[kind].amount if kind in self.by_kind else None for kind in SpendKind]


def spend_by_project(chosen: CostFilter) -> list[ProjectSpend]:
    """Every project in view with its spend by kind, the largest spender first."""
    rows = _days(chosen).values("project_id", "kind").annotate(**_SUMS)
    by_project: dict[int, dict[str, SpendSum]] = {pk: {} for pk in chosen.project_ids}
    for row in rows:
        by_project[row["project_id"]][row["kind"]] = _sum(row)
    projects = Project.objects.in_bulk(chosen.project_ids)
    spends = [
        ProjectSpend(project=projects[pk], total=_added(kinds.values()), by_kind=kinds)
        for pk, kinds in by_project.items()
        if pk in projects
    ]
    return sorted(spends, key=lambda spend: (-spend.total.amount, spend.project.name))


def _added(sums: Iterable[SpendSum]) -> SpendSum:
    items = list(sums)
    return SpendSum(
        amount=sum((item.amount for item in items), ZERO),
        entries=sum(item.entries for item in items),
        unpriced_entries=sum(item.unpriced_entries for item in items),
    )


@dataclass(frozen=True)
class CostDriver:
    """One project's spend of one kind on one model version (None: no version, e.g. a
    training job's first attempts or an evaluation of base models)."""

    project: Project
    kind: str
    model_version: ModelVersion | None
    spend: SpendSum
    tokens: Decimal
    compute_seconds: Decimal

    @property
    def kind_label(self) -> str:
        return SpendKind(self.kind).label


def top_cost_drivers(chosen: CostFilter, *, limit: int = 10) -> list[CostDriver]:
    """The largest spends by project, kind and model version; unpriced ones count too, after
    the priced (a driver with unknown cost is listed, never hidden as $0)."""
    rows = list(
        _days(chosen)
        .values("project_id", "kind", "model_version_key")
        .annotate(
            spent=Sum("amount"),
            spends=Sum("entries"),
            unpriced=Sum("unpriced_entries"),
            used_tokens=Sum("tokens"),
            used_seconds=Sum("compute_seconds"),
        )
        .order_by("-spent", "-unpriced", "project_id", "kind", "model_version_key")[:limit]
    )
    projects = Project.objects.in_bulk({row["project_id"] for row in rows})
    versions = ModelVersion.objects.select_related("registered_model").in_bulk(
        {row["model_version_key"] for row in rows if row["model_version_key"]}
    )
    return [
        CostDriver(
            project=projects[row["project_id"]],
            kind=row["kind"],
            model_version=versions.get(row["model_version_key"]),
            spend=_sum(row),
            tokens=row["used_tokens"] or ZERO,
            compute_seconds=row["used_seconds"] or ZERO,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class UnpricedSpend:
    project: Project
    kind: str
    entries: int

    @property
    def kind_label(self) -> str:
        return SpendKind(self.kind).label


def unpriced_spends(chosen: CostFilter) -> list[UnpricedSpend]:
    """Where spends were recorded without a price, per project and kind: shown on the
    dashboard, so that a gap in the price table is seen instead of read as free."""
    rows = (
        _days(chosen)
        .filter(unpriced_entries__gt=0)
        .values("project_id", "kind")
        .annotate(unpriced=Sum("unpriced_entries"))
        .order_by("project_id", "kind")
    )
    projects = Project.objects.in_bulk(chosen.project_ids)
    return [
        UnpricedSpend(
            project=projects[row["project_id"]], kind=row["kind"], entries=row["unpriced"]
        )
        for row in rows
    ]


# --- production models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductionModel:
    """A project's version behind the ``production`` alias, with what it served in the
    filter's days and what it cost against its alternative.

    ``alternative`` is the best-scoring prompted candidate of the latest finished evaluation
    of this version (None when it was never evaluated against one); ``alternative_usd`` is
    what the same answered requests would have cost with it. ``investment_usd`` is what the
    version cost before and beside serving (its training job's spends and the evaluations
    and judging recorded against it), all time up to the filter's end. ``savings_to_date``
    counts all its answered traffic up to the filter's end."""

    project: Project
    version: ModelVersion
    requests: int
    prompt_tokens: int
    completion_tokens: int
    serving: SpendSum
    investment: SpendSum
    alternative: PricedAlternative | None
    alternative_usd: Decimal | None
    savings_usd: Decimal | None
    savings_to_date_usd: Decimal | None
    days_in_view: int

    @property
    def on_own_hardware(self) -> bool:
        """Served by the local model server or a vLLM host: its serving cost is the model
        server's decoding time (``costs.local_serving``); idle time and a vLLM host's time
        are not metered, so its savings may read high."""
        return not self.version.fine_tuned_model

    @property
    def net_to_date_usd(self) -> Decimal | None:
        """Savings to date less the investment: at or above 0 the fine-tune has paid back."""
        if self.savings_to_date_usd is None:
            return None
        return self.savings_to_date_usd - self.investment.amount

    @property
    def payback(self) -> str:
        """Whether the fine-tune has repaid its cost, or when it will at the view's rate."""
        net = self.net_to_date_usd
        if net is None or self.savings_usd is None:
            return "unknown: no evaluation against an alternative"
        if net >= 0:
            return "paid back"
        if self.savings_usd <= 0:
            return "not at this traffic: it saves nothing"
        per_day = self.savings_usd / max(self.days_in_view, 1)
        days = math.ceil(-net / per_day)
        return f"in about {days} day{'s' if days != 1 else ''} at this traffic"


def _latest_evaluation_with(version: ModelVersion) -> EvalRun | None:
    run_ids = Candidate.objects.filter(model_version=version).values("run_id")
    return (
        EvalRun.objects.filter(pk__in=run_ids, status=EvalStatus.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def _traffic(
    version: ModelVersion, since: dt.datetime | None, before: dt.datetime
) -> dict[str, Any]:
    rows = RequestLog.objects.filter(
        project_id=version.registered_model.project_id,
        served_version=version,
        status__in=ANSWERED,
        shadow_of="",
        created_at__lt=before,
    )
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return rows.aggregate(
        requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )


def _ledger_spend(kinds: Sequence[str], query: Q) -> SpendSum:
    rows = LedgerEntry.objects.filter(query, kind__in=kinds).aggregate(
        spent=Sum("amount"),
        spends=Count("id"),
        unpriced=Count("id", filter=Q(amount__isnull=True)),
    )
    return _sum(rows)


def production_model(version: ModelVersion, chosen: CostFilter) -> ProductionModel:
    first, after = chosen.moments
    in_view = _traffic(version, first, after)
    to_date = _traffic(version, None, after)
    serving = _sum(
        LedgerDay.objects.filter(
            project_id=version.registered_model.project_id,
            model_version_key=version.pk,
            kind=SpendKind.SERVING,
            day__gte=chosen.start,
            day__lte=chosen.end,
        ).aggregate(**_SUMS)
    )
    serving_to_date = _sum(
        LedgerDay.objects.filter(
            project_id=version.registered_model.project_id,
            model_version_key=version.pk,
            kind=SpendKind.SERVING,
            day__lte=chosen.end,
        ).aggregate(**_SUMS)
    )
    investment = _ledger_spend(
        INVESTMENT_KINDS,
        (Q(model_version=version) | Q(training_job_id=version.training_job_id))
        & Q(occurred_at__lt=after),
    )
    run = _latest_evaluation_with(version)
    alternatives = priced_alternatives(run) if run is not None else []
    alternative = alternatives[0] if alternatives else None
    alternative_usd = savings = savings_to_date = None
    if alternative is not None:
        alternative_usd = (alternative.cost_per_request * in_view["requests"]).quantize(
            AMOUNT_PLACES
        )
        savings = alternative_usd - serving.amount
        savings_to_date = (
            alternative.cost_per_request * to_date["requests"] - serving_to_date.amount
        ).quantize(AMOUNT_PLACES)
    return ProductionModel(
        project=version.registered_model.project,
        version=version,
        requests=in_view["requests"],
        prompt_tokens=in_view["prompt"] or 0,
        completion_tokens=in_view["completion"] or 0,
        serving=serving,
        investment=investment,
        alternative=alternative,
        alternative_usd=alternative_usd,
        savings_usd=savings,
        savings_to_date_usd=savings_to_date,
        days_in_view=(chosen.end - chosen.start).days + 1,
    )


def production_versions(chosen: CostFilter) -> list[ModelVersion]:
    """The versions behind each registered model's production alias in the projects in view."""
    aliases = (
        Alias.objects.filter(
            name=PRODUCTION_ALIAS, registered_model__project_id__in=chosen.project_ids
        )
        .select_related("model_version__registered_model__project", "model_version__training_job")
        .order_by("registered_model__project__name", "registered_model__name")
    )
    return [alias.model_version for alias in aliases]


# --- metric trends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricPoint:
    when: dt.date
    value: float
    count: int


@dataclass(frozen=True)
class MetricTrend:
    """A production model's quality over time: each finished evaluation's score of one of
    its registered model's versions (offline), and the weekly mean feedback score of the
    traffic they served (online), within the filter's days."""

    version: ModelVersion
    metric_label: str
    offline: list[MetricPoint]
    online_feedback: list[MetricPoint]


def metric_trend(version: ModelVersion, chosen: CostFilter) -> MetricTrend:
    first, after = chosen.moments
    candidates = (
        Candidate.objects.filter(
            model_version__registered_model_id=version.registered_model_id,
            run__status=EvalStatus.SUCCEEDED,
            run__finished_at__gte=first,
            run__finished_at__lt=after,
        )
        .select_related("run")
        .order_by("run__finished_at", "pk")
    )
    offline = []
    metric = ""
    for candidate in candidates:
        metric = candidate.run.report.get("primary_metric") or candidate.run.primary_metric
        value = candidate.metrics.get("means", {}).get(metric)
        if value is not None and candidate.run.finished_at is not None:
            offline.append(MetricPoint(candidate.run.finished_at.date(), float(value), 1))
    weeks = (
        RequestLog.objects.filter(
            project_id=version.registered_model.project_id,
            served_version__registered_model_id=version.registered_model_id,
            feedback_score__isnull=False,
            created_at__gte=first,
            created_at__lt=after,
        )
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(score=Avg("feedback_score"), count=Count("id"))
        .order_by("week")
    )
    online = [MetricPoint(row["week"].date(), row["score"], row["count"]) for row in weeks]
    label = METRICS[metric].label if metric in METRICS else "Task metric"
    return MetricTrend(version=version, metric_label=label, offline=offline, online_feedback=online)


# --- the dashboard, whole -------------------------------------------------------------------------


@dataclass(frozen=True)
class CostDashboard:
    """Everything the dashboard page and its API show for one filter."""

    chosen: CostFilter
    total: SpendSum
    by_month: list[MonthSpend]
    by_project: list[ProjectSpend]
    drivers: list[CostDriver]
    unpriced: list[UnpricedSpend]
    production: list[ProductionModel]
    trends: list[MetricTrend]

    @property
    def months(self) -> list[dt.date]:
        """Every month of the filter's days, the empty ones included."""
        month, last = self.chosen.start.replace(day=1), self.chosen.end.replace(day=1)
        months = []
        while month <= last:
            months.append(month)
            month = (month + dt.timedelta(days=32)).replace(day=1)
        return months

    def month_kind_amount(self, month: dt.date, kind: str) -> Decimal:
        for spend in self.by_month:
            if spend.month == month and spend.kind == kind:
                return spend.spend.amount
        return ZERO

    @property
    def month_rows(self) -> list[MonthRow]:
        """One row a month of the view, with each kind's amount in SpendKind's order."""
        rows = []
        for month in self.months:
            spends = {s.kind: s.spend for s in self.by_month if s.month == month}
            rows.append(
                MonthRow(
                    month=month,
                    amounts=[spends[k].amount if k in spends else None for k in SpendKind],
                    total=_added(spends.values()),
                )
            )
        return rows


@dataclass(frozen=True)
class MonthRow:
    month: dt.date
    amounts: list[Decimal | None]
    total: SpendSum


def production_models(chosen: CostFilter) -> list[ProductionModel]:
    return [production_model(version, chosen) for version in production_versions(chosen)]


def cost_dashboard(chosen: CostFilter) -> CostDashboard:
    versions = production_versions(chosen)
    return CostDashboard(
        chosen=chosen,
        total=spend_total(chosen),
        by_month=spend_by_month_and_kind(chosen),
        by_project=spend_by_project(chosen),
        drivers=top_cost_drivers(chosen),
        unpriced=unpriced_spends(chosen),
        production=[production_model(version, chosen) for version in versions],
        trends=[metric_trend(version, chosen) for version in versions],
    )
