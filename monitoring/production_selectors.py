"""Reads for the production pages and their API: a project's served aliases with their last
day's headline figures, one alias's figures over a range (series per bucket, the whole range,
its promotions and rollbacks), the range a request asks for, and the alias's latest drift
report with its most drifted requests, each linked to its place in the request log."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from ftportal.errors import ApplicationError
from ftportal.models import Project
from registry.models import PRODUCTION_ALIAS, Alias, AliasChange
from serving.models import RequestLog
from serving.selectors import LogCursor, TrafficFilter, request_logs_in_project

from .figures import (
    BUCKET_LENGTH,
    BUCKETS,
    Bucket,
    WindowFigures,
    alias_changes_between,
    bucket_starts,
    figure_series,
    window_figures,
)
from .models import DriftReport

# The range a page may ask for, in days, and its default.
MAX_DAYS = 366
DEFAULT_DAYS = 7
# Up to this many days the default bucket is the hour, beyond it the day.
HOURLY_UP_TO_DAYS = 3
# More points than this make a chart unreadable and its queries long: a range asks for a
# coarser bucket instead (hours cover up to 16 days).
MAX_BUCKETS = 400
# The overview's headline window.
OVERVIEW_WINDOW = timedelta(hours=24)
# The drifted requests shown from a report (it keeps them most drifted first).
DRIFTED_SHOWN = 50


# --- which aliases ----------------------------------------------------------------------------


def served_aliases(project: Project) -> QuerySet[Alias]:
    """Every alias of every registered model of the project: production first, then by model
    and alias name, with the version each serves."""
    return (
        Alias.objects.filter(registered_model__project=project)
        .select_related("registered_model__project", "model_version")
        .annotate(
            not_production=Case(
                When(name=PRODUCTION_ALIAS, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("not_production", "registered_model__name", "name")
    )


def served_alias_in_project(project: Project, model_id: int, alias: str) -> Alias:
    """One alias of one of the project's models; 404 for any other (another project's model
    included, so ids do not leak)."""
    return get_object_or_404(served_aliases(project), registered_model_id=model_id, name=alias)


@dataclass(frozen=True)
class AliasHeadline:
    alias: Alias
    figures: WindowFigures


def served_alias_headlines(project: Project, *, now: datetime | None = None) -> list[AliasHeadline]:
    """Each served alias with its figures over the last 24 hours (``window_figures``: a fixed
    few queries an alias)."""
    until = now or timezone.now()
    return [
        AliasHeadline(
            alias,
            window_figures(
                registered_model=alias.registered_model,
                alias=alias.name,
                since=until - OVERVIEW_WINDOW,
                until=until,
            ),
        )
        for alias in served_aliases(project)
    ]


# --- the range a request asks for -----------------------------------------------------------


@dataclass(frozen=True)
class ProductionRange:
    """The last ``days`` days up to ``until``, in buckets of ``bucket``."""

    days: int
    bucket: Bucket
    until: datetime

    @property
    def since(self) -> datetime:
        return self.until - timedelta(days=self.days)

    @property
    def buckets(self) -> int:
        return len(bucket_starts(self.since, self.until, self.bucket))


def default_bucket(days: int) -> Bucket:
    return "hour" if days <= HOURLY_UP_TO_DAYS else "day"


def _days_from(raw: str) -> int:
    text = raw.strip()
    if not text:
        return DEFAULT_DAYS
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text[:6]) <= MAX_DAYS:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ApplicationError(
            f"days: a whole number of days from 1 to {MAX_DAYS}, not {shown!r}.",
            extra={"field": "days"},
        )
    return int(text)


def _bucket_from(raw: str, days: int) -> Bucket:
    text = raw.strip()
    if not text:
        return default_bucket(days)
    for bucket in BUCKETS:
        if text == bucket:
            return bucket
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise ApplicationError(
        f"bucket: one of {', '.join(BUCKETS)}, not {shown!r}.", extra={"field": "bucket"}
    )


def production_range(*, days: int, bucket: Bucket, until: datetime) -> ProductionRange:
    """The range, refused (a 400 naming ``bucket``) when it would have more than
    ``MAX_BUCKETS`` buckets."""
    chosen = ProductionRange(days=days, bucket=bucket, until=until)
    if chosen.buckets > MAX_BUCKETS:
        # The first and the last bucket are cut short: one bucket fewer of whole ones.
        most_days = math.floor((MAX_BUCKETS - 1) * BUCKET_LENGTH[bucket] / timedelta(days=1))
        raise ApplicationError(
            f"bucket: {days} days in {bucket}s would be more than {MAX_BUCKETS} points; "
            f"choose a longer bucket or at most {most_days} days.",
            extra={"field": "bucket"},
        )
    return chosen


def production_range_from(
    query: Mapping[str, Any], *, now: datetime | None = None
) -> ProductionRange:
    """The range a page's query asks for: ``days`` (1 to ``MAX_DAYS``, default
    ``DEFAULT_DAYS``) up to now, in ``bucket`` (hour, day or week; by default the hour up to
    ``HOURLY_UP_TO_DAYS`` days, else the day). ApplicationError naming the parameter when one
    is wrong."""
    days = _days_from(str(query.get("days", "")))
    bucket = _bucket_from(str(query.get("bucket", "")), days)
    return production_range(days=days, bucket=bucket, until=now or timezone.now())


# --- one alias over a range -----------------------------------------------------------------


@dataclass(frozen=True)
class AliasProduction:
    alias: Alias
    range: ProductionRange
    series: list[tuple[datetime, WindowFigures]]
    whole: WindowFigures
    changes: list[AliasChange]


def alias_production(alias: Alias, chosen: ProductionRange) -> AliasProduction:
    """The alias's figures per bucket and over the whole range, and its promotions and
    rollbacks in it."""
    model, name = alias.registered_model, alias.name
    since, until = chosen.since, chosen.until
    return AliasProduction(
        alias=alias,
        range=chosen,
        series=figure_series(
            registered_model=model, alias=name, since=since, until=until, bucket=chosen.bucket
        ),
        whole=window_figures(registered_model=model, alias=name, since=since, until=until),
        changes=alias_changes_between(registered_model=model, alias=name, since=since, until=until),
    )


# --- drift ------------------------------------------------------------------------------------


def latest_drift_report(alias: Alias) -> DriftReport | None:
    """The alias's newest drift report (index ``registered_model, alias, -created_at``)."""
    return (
        DriftReport.objects.filter(registered_model=alias.registered_model, alias=alias.name)
        .select_related("model_version")
        .order_by("-created_at", "-id")
        .first()
    )


def _shown(value: object) -> str:
    """A figure's value as the table writes it: numbers to four significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "…"


@dataclass(frozen=True)
class DriftFigureRow:
    name: str
    label: str
    method: str
    reference: str
    current: str
    statistic: str
    threshold: str
    drifted: bool


def drift_figure_rows(report: DriftReport) -> list[DriftFigureRow]:
    """The report's figures, drifted ones first, each value written for the table (a figure
    the report's writer left incomplete shows dashes)."""
    figures: Mapping[str, Any] = report.figures if isinstance(report.figures, dict) else {}
    rows = []
    for name, raw in figures.items():
        found: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        rows.append(
            DriftFigureRow(
                name=str(name),
                label=str(found.get("label") or name),
                method=str(found.get("method") or ""),
                reference=_shown(found.get("reference")),
                current=_shown(found.get("current")),
                statistic=_shown(found.get("statistic")),
                threshold=_shown(found.get("threshold")),
                drifted=found.get("drifted") is True,
            )
        )
    return sorted(rows, key=lambda row: not row.drifted)


@dataclass(frozen=True)
class DriftedRequest:
    """One of the report's most drifted requests; ``row`` is its request log row (None when
    retention deleted it), ``log_url`` its place in the request log browser."""

    request_id: str
    similarity: float | None
    text: str
    row: RequestLog | None
    log_url: str | None

    @property
    def may_send(self) -> bool:
        return self.row is not None and self.row.sent_to_review_id is None


def request_log_url(project: Project, row: RequestLog) -> str:
    """The request log page that starts at ``row`` (a keyset cursor just newer than it, every
    kind of traffic), anchored at the row."""
    cursor = LogCursor(row.created_at, row.pk + 1)
    query = urlencode({"traffic": TrafficFilter.ALL, "after": cursor.encoded()})
    return f"{reverse('request_logs', args=[project.pk])}?{query}#request-{row.request_id}"


def _similarity(raw: object) -> float | None:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None


def drifted_requests(
    project: Project, report: DriftReport, *, shown: int = DRIFTED_SHOWN
) -> list[DriftedRequest]:
    """The report's most drifted requests (as it orders them), each with its log row read in
    one query by request id (another project's ids match nothing)."""
    examples: Sequence[Any] = (
        report.drifted_examples if isinstance(report.drifted_examples, list) else []
    )
    kept = [example for example in examples[:shown] if isinstance(example, dict)]
    ids = [str(example.get("request_id", "")) for example in kept]
    rows = {
        row.request_id: row
        for row in request_logs_in_project(project, ids).only(
            "id", "request_id", "created_at", "sent_to_review_id"
        )
    }
    found = []
    for example, request_id in zip(kept, ids, strict=True):
        row = rows.get(request_id)
        found.append(
            DriftedRequest(
                request_id=request_id,
                similarity=_similarity(example.get("similarity")),
                text=str(example.get("text", "")),
                row=row,
                log_url=request_log_url(project, row) if row is not None else None,
            )
        )
    return found
