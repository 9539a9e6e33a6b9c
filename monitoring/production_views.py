"""Production pages: the project's served aliases with their last day's headline figures
(``/projects/<id>/production/``), and one alias over a range of days
(``/projects/<id>/production/<model_id>/<alias>/?days=&bucket=``): its figures per hour, day or
week as charts, with its promotions and rollbacks marked on them and listed, the range's
headline figures, and its latest drift report with the most drifted requests, which those who
may send traffic to review send to review from here. Every member reads them
(``Action.READ_MONITORING``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from datasets.selectors import datasets_of
from ftportal.charts import Axis, Chart, Marker, Point, Series
from ftportal.http import AppRequest
from ftportal.permissions import project_for
from ftportal.roles import Action, role_flags
from registry.models import AliasChange

from .figures import BUCKETS, CONTRACT_LABEL, Bucket, WindowFigures, bucket_start
from .production_selectors import (
    HOURLY_UP_TO_DAYS,
    MAX_DAYS,
    OVERVIEW_WINDOW,
    AliasProduction,
    alias_production,
    drift_figure_rows,
    drifted_requests,
    latest_drift_report,
    production_range_from,
    served_alias_headlines,
    served_alias_in_project,
)

LABEL_FORMATS: dict[Bucket, str] = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d"}
AXIS_TITLES: dict[Bucket, str] = {
    "hour": "Hour (UTC)",
    "day": "Day (UTC)",
    "week": "Week from Monday (UTC)",
}


# --- figures as people read them --------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _usd(value: Decimal) -> str:
    places = 4 if abs(value) < 1 else 2
    return f"${value:,.{places}f}"


def headline(figures: WindowFigures) -> list[tuple[str, str, str]]:
    """The figures as (id, label, text) for a facts list or a table row."""
    cost = _usd(figures.cost_usd)
    if figures.unpriced:
        cost += f" + {figures.unpriced:,} answered without a price"
    score = "–"
    if figures.feedback_score is not None:
        score = f"{figures.feedback_score:.2f} (from {figures.feedback_count:,})"
    contract = "no contract"
    if figures.contract_checked:
        contract = f"{_percent(figures.contract_validity)} of {figures.contract_checked:,} checked"
    return [
        ("requests", "Requests", f"{figures.requests:,}"),
        ("error_rate", "Error rate", f"{_percent(figures.error_rate)} ({figures.errors:,})"),
        ("fallback_rate", "Fallback rate", _percent(figures.fallback_rate)),
        ("latency_p50_ms", "Latency p50", _milliseconds(figures.latency_p50_ms)),
        ("latency_p95_ms", "Latency p95", _milliseconds(figures.latency_p95_ms)),
        ("cost_usd", "Known cost", cost),
        ("feedback_rate", "With feedback", _percent(figures.feedback_rate)),
        ("feedback_score", "Mean feedback score", score),
        ("success_rate", "With a success event", _percent(figures.success_rate)),
        ("contract_validity", CONTRACT_LABEL, contract),
    ]


# --- charts -------------------------------------------------------------------------------------


def bucket_label(start: datetime, bucket: Bucket) -> str:
    return start.strftime(LABEL_FORMATS[bucket])


def change_marker(change: AliasChange, bucket: Bucket) -> Marker:
    """A promotion or rollback, at the bucket that holds it."""
    label = f"{change.get_kind_display()} to v{change.to_version.number}"
    return Marker(bucket_label(bucket_start(change.created_at, bucket), bucket), label)


FigureOf = Callable[[WindowFigures], float | int | Decimal | None]


def _points(production: AliasProduction, figure: FigureOf) -> list[Point]:
    bucket = production.range.bucket
    points: list[Point] = []
    for start, figures in production.series:
        value = figure(figures)
        if value is not None:
            points.append((bucket_label(start, bucket), float(value)))
    return points


def production_charts(production: AliasProduction) -> list[Chart]:
    """The alias's charts over the range: one per figure family, each with its promotions and
    rollbacks marked."""
    bucket = production.range.bucket
    labels = tuple(bucket_label(start, bucket) for start, _ in production.series)
    markers = tuple(change_marker(change, bucket) for change in production.changes)
    x = Axis(AXIS_TITLES[bucket], labels=labels)
    name = f"{production.alias.registered_model.name}/{production.alias.name}"

    def chart(
        key: str, description: str, y: Axis, series: list[Series], y2: Axis | None = None
    ) -> Chart:
        return Chart(
            element_id=f"production-{key}-chart",
            description=f"{name}: {description}, per {bucket} (promotions and rollbacks marked)",
            x=x,
            y=y,
            y2=y2,
            series=series,
            markers=markers,
        )

    def series(title: str, figure: FigureOf, axis: str = "y") -> Series:
        return Series(title, _points(production, figure), axis="y2" if axis == "y2" else "y")

    share = Axis("Share of requests", format="percent", min=0, max=1)
    return [
        chart(
            "requests",
            "requests and errors",
            Axis("Requests", format="integer", min=0),
            [series("Requests", lambda f: f.requests), series("Errors", lambda f: f.errors)],
        ),
        chart(
            "latency",
            "latency p50 and p95",
            Axis("Latency (milliseconds)", format="integer", min=0),
            [
                series("p50", lambda f: f.latency_p50_ms),
                series("p95", lambda f: f.latency_p95_ms),
            ],
        ),
        chart(
            "rates",
            "error and fallback rates",
            share,
            [
                series("Error rate", lambda f: f.error_rate),
                series("Fallback rate", lambda f: f.fallback_rate),
            ],
        ),
        chart(
            "cost",
            "known cost and answers without a price",
            Axis("Known cost (US dollars)", format="usd", min=0),
            [
                series("Known cost", lambda f: f.cost_usd),
                series("Answered without a price", lambda f: f.unpriced, "y2"),
            ],
            y2=Axis("Requests", format="integer", min=0),
        ),
        chart(
            "feedback",
            "share of requests with feedback and the mean feedback score",
            share,
            [
                series("With feedback", lambda f: f.feedback_rate),
                series("Mean feedback score", lambda f: f.feedback_score, "y2"),
            ],
            y2=Axis("Feedback score (0 to 1)", format="decimal", min=0, max=1),
        ),
        chart(
            "outcomes",
            "share with a success event, and answers within the contract (the newest of each "
            "bucket checked)",
            share,
            [
                series("With a success event", lambda f: f.success_rate),
                series("Answers within the contract (sampled)", lambda f: f.contract_validity),
            ],
        ),
    ]


# --- pages --------------------------------------------------------------------------------------


@login_required
@require_GET
def production_overview(request: AppRequest, project_id: int) -> HttpResponse:
    """Every served alias of the project with its last 24 hours."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    rows = [(item.alias, headline(item.figures)) for item in served_alias_headlines(project)]
    context = {
        "project": project,
        "can": role_flags(role),
        "rows": rows,
        "columns": [label for _, label, _ in headline(WindowFigures())],
        "window_hours": int(OVERVIEW_WINDOW.total_seconds() // 3600),
    }
    return render(request, "monitoring/production.html", context)


@login_required
@require_GET
def production_alias(
    request: AppRequest, project_id: int, model_id: int, alias: str
) -> HttpResponse:
    """One alias over the last ``days`` days in ``bucket``s (400 naming a wrong parameter)."""
    project, role = project_for(
        user=request.user, project_id=project_id, action=Action.READ_MONITORING
    )
    served = served_alias_in_project(project, model_id, alias)
    chosen = production_range_from(request.GET)
    production = alias_production(served, chosen)
    can = role_flags(role)
    report = latest_drift_report(served)
    drifted = drifted_requests(project, report) if report is not None else []
    context = {
        "project": project,
        "can": can,
        "served": served,
        "production": production,
        "headline": headline(production.whole),
        "charts": production_charts(production),
        "buckets": BUCKETS,
        # The bucket the query named (valid, or the range refused it): else the automatic one.
        "bucket_asked": request.GET.get("bucket", "").strip(),
        "hourly_up_to_days": HOURLY_UP_TO_DAYS,
        "max_days": MAX_DAYS,
        "report": report,
        "drift_rows": drift_figure_rows(report) if report is not None else [],
        "drifted": drifted,
        "may_send": can.send_traffic_to_review and any(item.may_send for item in drifted),
        "datasets": datasets_of(project).order_by("name") if can.send_traffic_to_review else [],
    }
    return render(request, "monitoring/production_alias.html", context)
