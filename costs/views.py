"""The managers' dashboard (/costs/): spend per month by kind and per project, the top cost
drivers, unpriced spends, each production model's savings and payback and its metric trends,
for every project whose costs the user may read, filtered by days and project; and its CSV
exports (the ledger's rows, or the month-by-kind sums)."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Generator, Iterable, Iterator
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from ftportal.charts import Axis, Chart, Series
from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.models import Project
from ftportal.spending import SpendKind

from .reconciliation import reconciliation_flags, reconciliation_readable
from .selectors import (
    CostDashboard,
    CostFilter,
    MetricTrend,
    cost_dashboard,
    cost_projects,
    ledger_entries,
    production_models,
    spend_by_month_and_kind,
    spend_by_project,
    top_cost_drivers,
)
from .unpriced_alerts import unpriced_alerts_of

# Every cost driver of the view goes into its export, not only the page's top ten.
DRIVERS_EXPORTED = 10_000
# The flagged reconciliation days the dashboard warns of: the last month's.
RECONCILIATION_WINDOW_DAYS = 30
# The unpriced spends' alerts listed (the newest): each names a price to set.
UNPRICED_ALERTS_SHOWN = 20
# The default view: this month and the eleven before it.
DEFAULT_MONTHS = 12
# Years a filter may span: beyond it a typo (0026 for 2026) would ask for centuries of rows.
MAX_SPAN_DAYS = 366 * 10


def _date(query: QueryDict, name: str, label: str, default: dt.date) -> dt.date:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ApplicationError(
            f"{label} ({name}): {raw[:40]!r} is not a date; write it as YYYY-MM-DD.",
            extra={"field": name},
        ) from None


def _default_start(end: dt.date) -> dt.date:
    month = end.replace(day=1)
    for _ in range(DEFAULT_MONTHS - 1):
        month = (month - dt.timedelta(days=1)).replace(day=1)
    return month


def cost_filter_from(query: QueryDict, projects: list[Project]) -> CostFilter:
    """The filter a request asks for, within ``projects`` (those the user may read):
    ``start`` and ``end`` (YYYY-MM-DD, UTC, both included; the last twelve months by
    default) and ``project`` (an id; all by default). ApplicationError naming the field
    when one is wrong."""
    end = _date(query, "end", "To", timezone.now().astimezone(dt.UTC).date())
    start = _date(query, "start", "From", _default_start(end))
    if start > end:
        raise ApplicationError(
            f"From (start) {start} is after To (end) {end}.", extra={"field": "start"}
        )
    if (end - start).days > MAX_SPAN_DAYS:
        raise ApplicationError(
            f"From {start} to {end} spans more than ten years; choose a shorter range.",
            extra={"field": "start"},
        )
    ids = tuple(project.pk for project in projects)
    raw = query.get("project", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) not in ids:
            raise ApplicationError(
                f"Project (project): {raw[:40]!r} is not a project whose costs you may read.",
                extra={"field": "project"},
            )
        ids = (int(raw),)
    return CostFilter(project_ids=ids, start=start, end=end)


def _usd(amount: Decimal) -> float:
    return float(amount)


def month_chart(dashboard: CostDashboard) -> Chart:
    months = dashboard.months
    labels = tuple(month.strftime("%Y-%m") for month in months)
    kinds = [kind for kind in SpendKind if any(s.kind == kind for s in dashboard.by_month)]
    return Chart(
        element_id="chart-spend-by-month",
        description="Priced spend per month, stacked by kind, in US dollars",
        x=Axis("Month", labels=labels),
        y=Axis("Spend (US dollars)", format="usd", min=0),
        series=[
            Series(
                kind.label,
                [
                    (label, _usd(dashboard.month_kind_amount(month, kind)))
                    for label, month in zip(labels, months, strict=True)
                ],
            )
            for kind in kinds
        ],
        style="bar",
    )


def project_chart(dashboard: CostDashboard) -> Chart:
    spends = [spend for spend in dashboard.by_project if spend.total.entries]
    labels = tuple(spend.project.name for spend in spends)
    kinds = [kind for kind in SpendKind if any(kind in s.by_kind for s in spends)]
    return Chart(
        element_id="chart-spend-by-project",
        description="Priced spend per project, stacked by kind, in US dollars",
        x=Axis("Project", labels=labels),
        y=Axis("Spend (US dollars)", format="usd", min=0),
        series=[
            Series(
                kind.label,
                [
                    (spend.project.name, _usd(spend.by_kind[kind].amount))
                    for spend in spends
                    if kind in spend.by_kind
                ],
            )
            for kind in kinds
        ],
        style="bar",
    )


def trend_chart(trend: MetricTrend, index: int) -> Chart:
    days = sorted({p.when for p in trend.offline} | {p.when for p in trend.online_feedback})
    return Chart(
        element_id=f"chart-trend-{index}",
        description=(
            f"{trend.version}: {trend.metric_label} of each evaluation, and the weekly mean "
            "feedback score of its traffic"
        ),
        x=Axis("Day", labels=tuple(day.isoformat() for day in days)),
        y=Axis(trend.metric_label, format="percent", min=0, max=1),
        y2=Axis("Feedback score (mean)", format="decimal"),
        series=[
            Series(
                f"{trend.metric_label} (offline evaluations)",
                [(p.when.isoformat(), p.value) for p in trend.offline],
            ),
            Series(
                "Feedback score (online, weekly)",
                [(p.when.isoformat(), p.value) for p in trend.online_feedback],
                axis="y2",
            ),
        ],
    )


@login_required
@require_GET
def costs_dashboard(request: AppRequest) -> HttpResponse:
    projects = cost_projects(request.user)
    chosen = cost_filter_from(request.GET, projects)
    dashboard = cost_dashboard(chosen)
    context = {
        "projects": projects,
        "chosen": chosen,
        "chosen_project": chosen.project_ids[0] if len(chosen.project_ids) == 1 else None,
        "dashboard": dashboard,
        "kinds": list(SpendKind),
        "month_chart": month_chart(dashboard),
        "project_chart": project_chart(dashboard),
        "trends": [
            (trend, trend_chart(trend, index)) for index, trend in enumerate(dashboard.trends)
        ],
        "query": request.GET.urlencode(),
        "unpriced_alerts": unpriced_alerts_of(chosen.project_ids, since=chosen.start)[
            :UNPRICED_ALERTS_SHOWN
        ],
        "reconciliation_readable": reconciliation_readable(request.user),
        "reconciliation_window_days": RECONCILIATION_WINDOW_DAYS,
        "flagged_days": reconciliation_flags(
            timezone.now().date() - dt.timedelta(days=RECONCILIATION_WINDOW_DAYS)
        )
        if projects
        else 0,
    }
    return render(request, "costs/dashboard.html", context)


class _Echo:
    """What csv.writer writes to when each line is handed on as it is made (streaming)."""

    def write(self, value: str) -> str:
        return value


# A cell starting with one of these is a formula to a spreadsheet: a project or model name
# such as "=HYPERLINK(...)" is written with a leading quote, so it stays text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


LEDGER_COLUMNS = (
    "occurred_at",
    "project",
    "kind",
    "quantity",
    "unit",
    "price_usd",
    "price_per",
    "price_source",
    "amount_usd",
    "priced",
    "model_version_id",
    "training_job_id",
    "origin",
    "event",
)


def ledger_csv_lines(chosen: CostFilter) -> Generator[list[object]]:
    """The ledger export's lines: its header, then each row in view, oldest first."""
    yield list(LEDGER_COLUMNS)
    # Within a transaction the iterator's server-side cursor hands rows on as Postgres finds
    # them; outside one, Django declares it WITH HOLD, and Postgres first computes and stores
    # the whole result: 6.3 s before the first of 3 million rows, 0.3 s in a transaction.
    with transaction.atomic():
        yield from _ledger_rows(chosen)


def _ledger_rows(chosen: CostFilter) -> Iterator[list[object]]:
    for entry in ledger_entries(chosen).iterator(chunk_size=2000):
        yield [
            entry.occurred_at.isoformat(),
            entry.project.name,
            entry.kind,
            entry.quantity,
            entry.unit,
            entry.price,
            entry.price_per,
            entry.price_source,
            entry.amount,
            "yes" if entry.amount is not None else "no (unpriced)",
            entry.model_version_id,
            entry.training_job_id,
            entry.origin,
            entry.event,
        ]


def _monthly_lines(chosen: CostFilter) -> Iterator[list[object]]:
    yield ["month", "kind", "amount_usd", "spends", "unpriced_spends"]
    for spend in spend_by_month_and_kind(chosen):
        yield [
            spend.month.strftime("%Y-%m"),
            spend.kind,
            spend.spend.amount,
            spend.spend.entries,
            spend.spend.unpriced_entries,
        ]


def _project_lines(chosen: CostFilter) -> Iterator[list[object]]:
    yield [
        "project",
        "amount_usd",
        *(f"{kind.value}_usd" for kind in SpendKind),
        "spends",
        "unpriced_spends",
    ]
    for spend in spend_by_project(chosen):
        yield [
            spend.project.name,
            spend.total.amount,
            *spend.kind_amounts,
            spend.total.entries,
            spend.total.unpriced_entries,
        ]


def _driver_lines(chosen: CostFilter) -> Iterator[list[object]]:
    yield [
        "project",
        "kind",
        "model_version",
        "amount_usd",
        "tokens",
        "compute_seconds",
        "spends",
        "unpriced_spends",
    ]
    for driver in top_cost_drivers(chosen, limit=DRIVERS_EXPORTED):
        yield [
            driver.project.name,
            driver.kind,
            driver.model_version,
            driver.spend.amount,
            driver.tokens,
            driver.compute_seconds,
            driver.spend.entries,
            driver.spend.unpriced_entries,
        ]


def _production_lines(chosen: CostFilter) -> Iterator[list[object]]:
    yield [
        "project",
        "model_version",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "serving_usd",
        "serving_unpriced_spends",
        "alternative",
        "alternative_kind",
        "alternative_usd_per_request",
        "alternative_usd",
        "savings_usd",
        "investment_usd",
        "investment_unpriced_spends",
        "savings_to_date_usd",
        "net_to_date_usd",
        "payback",
    ]
    for model in production_models(chosen):
        alternative = model.alternative
        yield [
            model.project.name,
            model.version,
            model.requests,
            model.prompt_tokens,
            model.completion_tokens,
            model.serving.amount,
            model.serving.unpriced_entries,
            alternative.name if alternative else None,
            alternative.kind_label if alternative else None,
            alternative.cost_per_request if alternative else None,
            model.alternative_usd,
            model.savings_usd,
            model.investment.amount,
            model.investment.unpriced_entries,
            model.savings_to_date_usd,
            model.net_to_date_usd,
            model.payback,
        ]


def _csv_stream(lines: Iterable[list[object]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for line in lines:
        yield writer.writerow([csv_cell(value) for value in line])


REPORTS = {
    "ledger": ledger_csv_lines,
    "monthly": _monthly_lines,
    "projects": _project_lines,
    "drivers": _driver_lines,
    "production": _production_lines,
}


@login_required
@require_GET
def costs_export(request: AppRequest) -> StreamingHttpResponse:
    """The ledger's rows in view as CSV (``report=ledger``, the default), or one of the
    dashboard's tables: the spend per month and kind (``monthly``), per project
    (``projects``), the cost drivers (``drivers``), the production models' savings
    (``production``); streamed, so a year of a busy gateway's spends is never held in
    memory."""
    projects = cost_projects(request.user)
    chosen = cost_filter_from(request.GET, projects)
    report = request.GET.get("report", "ledger")
    if report not in REPORTS:
        raise ApplicationError(
            f"Report (report): {report[:40]!r} is not one of {', '.join(REPORTS)}.",
            extra={"field": "report"},
        )
    response = StreamingHttpResponse(
        _csv_stream(REPORTS[report](chosen)), content_type="text/csv; charset=utf-8"
    )
    name = f"ftportal-costs-{report}-{chosen.start}-{chosen.end}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
