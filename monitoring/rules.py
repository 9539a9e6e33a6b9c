"""Alert rules: the defaults every production alias gets, and checking every enabled rule
against its figure (celery beat, every few minutes).

A rule's figure comes from one of three places: the request log over the rule's window
(``monitoring.figures.window_figures``), the alias's latest drift report made within the
window (``monitoring.drift``), or a project figure a higher layer answers (the budget, through
``monitoring.project_figures``). A rule whose window saw fewer than ``min_volume`` requests
(or whose report is older than its window) decides nothing: its alert, if raised, stays as it
is until enough traffic says otherwise. A rule that holds raises its alert (key ``rule:<id>``);
one that no longer holds resolves it by itself."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.models import PRODUCTION_ALIAS, RegisteredModel

from .alerts import AlertRaise, alert_clear, alert_raise
from .figures import WindowFigures, window_figures
from .models import (
    DRIFT_FIGURES,
    AlertKind,
    AlertRule,
    Comparison,
    DriftReport,
    Figure,
    Severity,
)
from .project_figures import project_figure
from .selectors import production_aliases

logger = logging.getLogger(__name__)

# The request-log figures, by the WindowFigures attribute that holds each.
WINDOW_FIGURES = {
    Figure.REQUESTS: "requests",
    Figure.ERROR_RATE: "error_rate",
    Figure.FALLBACK_RATE: "fallback_rate",
    Figure.LATENCY_P50_MS: "latency_p50_ms",
    Figure.LATENCY_P95_MS: "latency_p95_ms",
    Figure.COST_USD: "cost_usd",
    Figure.FEEDBACK_RATE: "feedback_rate",
    Figure.FEEDBACK_SCORE: "feedback_score",
    Figure.SUCCESS_RATE: "success_rate",
    Figure.CONTRACT_VALIDITY: "contract_validity",
}
PROJECT_FIGURES = frozenset({Figure.BUDGET_USED_PERCENT})
# Shares shown as percentages in alert titles.
RATE_FIGURES = frozenset(
    {
        Figure.ERROR_RATE,
        Figure.FALLBACK_RATE,
        Figure.FEEDBACK_RATE,
        Figure.SUCCESS_RATE,
        Figure.CONTRACT_VALIDITY,
        Figure.OOV_SHARE,
        Figure.PII_SHARE,
        Figure.UNSEEN_LABEL_SHARE,
    }
)
DRIFT_WINDOW_MINUTES = 24 * 60


@dataclass(frozen=True)
class DefaultRule:
    figure: Figure
    comparison: Comparison
    threshold: float
    window_minutes: int
    min_volume: int
    cooldown_minutes: int = 60


# What a production alias is watched for from the day it exists. Drift thresholds are the
# usual ones (a domain classifier's ROC AUC above 0.55 as Evidently flags text drift; PSI of
# 0.2, the customary "significant shift"); the rest are deliberately loose so that a new
# project is not flooded, and leads tighten them on the rules page.
DEFAULT_RULES = (
    DefaultRule(Figure.ERROR_RATE, Comparison.ABOVE, 0.05, 60, 20),
    DefaultRule(Figure.LATENCY_P95_MS, Comparison.ABOVE, 10_000, 60, 20),
    DefaultRule(Figure.FEEDBACK_SCORE, Comparison.BELOW, 0.5, 24 * 60, 20, 24 * 60),
    DefaultRule(Figure.CONTRACT_VALIDITY, Comparison.BELOW, 0.95, 60, 20),
    DefaultRule(Figure.EMBEDDING_DRIFT_AUC, Comparison.ABOVE, 0.55, DRIFT_WINDOW_MINUTES, 50, 1440),
    DefaultRule(Figure.LABEL_DRIFT_PSI, Comparison.ABOVE, 0.2, DRIFT_WINDOW_MINUTES, 50, 1440),
    DefaultRule(Figure.UNSEEN_LABEL_SHARE, Comparison.ABOVE, 0.01, DRIFT_WINDOW_MINUTES, 50, 1440),
)


def default_rules_ensure(registered_model: RegisteredModel, alias: str = PRODUCTION_ALIAS) -> int:
    """Create the default rules the alias lacks; how many were created. A default a lead
    deleted is made again (disable it instead to silence it)."""
    made = 0
    for default in DEFAULT_RULES:
        try:
            with transaction.atomic():
                _, created = AlertRule.objects.get_or_create(
                    registered_model=registered_model,
                    alias=alias,
                    figure=default.figure,
                    is_default=True,
                    defaults={
                        "project_id": registered_model.project_id,
                        "comparison": default.comparison,
                        "threshold": default.threshold,
                        "window_minutes": default.window_minutes,
                        "min_volume": default.min_volume,
                        "cooldown_minutes": default.cooldown_minutes,
                    },
                )
        except IntegrityError:  # another process made it at the same moment
            continue
        made += created
    return made


def default_rules_ensure_everywhere() -> int:
    return sum(default_rules_ensure(alias.registered_model) for alias in production_aliases())


# --- reading a rule's figure ------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A figure's value for a rule and the volume behind it (None: not known, or too old)."""

    value: float | None
    volume: int
    # Where it was read, in words, for the alert's message.
    source: str


class _WindowCache:
    """Window figures computed once per alias and window during one check of all rules."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._figures: dict[tuple[int, str, int], WindowFigures] = {}

    def figures(self, rule: AlertRule) -> WindowFigures:
        key = (rule.registered_model_id, rule.alias, rule.window_minutes)
        if key not in self._figures:
            self._figures[key] = window_figures(
                registered_model=rule.registered_model,
                alias=rule.alias,
                since=self.now - dt.timedelta(minutes=rule.window_minutes),
                until=self.now,
            )
        return self._figures[key]


def _window_words(minutes: int) -> str:
    if minutes % 1440 == 0:
        days = minutes // 1440
        return "the last day" if days == 1 else f"the last {days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "the last hour" if hours == 1 else f"the last {hours} hours"
    return f"the last {minutes} minutes"


def latest_drift_report(registered_model_id: int, alias: str) -> DriftReport | None:
    return (
        DriftReport.objects.filter(registered_model_id=registered_model_id, alias=alias)
        .order_by("-created_at", "-id")
        .first()
    )


def rule_reading(rule: AlertRule, cache: _WindowCache) -> Reading:
    """The rule's figure as it stands now."""
    figure = Figure(rule.figure)
    if figure in DRIFT_FIGURES:
        report = latest_drift_report(rule.registered_model_id, rule.alias)
        too_old = cache.now - dt.timedelta(minutes=rule.window_minutes)
        if report is None or report.created_at < too_old:
            return Reading(value=None, volume=0, source="no recent drift report")
        entry = report.figures.get(figure.value) or {}
        current = entry.get("current")
        value = float(current) if isinstance(current, int | float) else None
        return Reading(
            value=value,
            volume=report.current_count,
            source=f"drift report of {report.window_end:%Y-%m-%d %H:%M} UTC",
        )
    if figure in PROJECT_FIGURES:
        return Reading(
            value=project_figure(figure.value, rule.project_id),
            volume=rule.min_volume,
            source="this month's budget",
        )
    figures = cache.figures(rule)
    raw = getattr(figures, WINDOW_FIGURES[figure])
    value = float(raw) if raw is not None else None
    return Reading(value=value, volume=figures.requests, source=_window_words(rule.window_minutes))


def breaches(rule: AlertRule, value: float) -> bool:
    if rule.comparison == Comparison.ABOVE:
        return value > rule.threshold
    return value < rule.threshold


def shown(figure: Figure, value: float) -> str:
    """A figure's value as an alert writes it: shares in percent, milliseconds whole."""
    if figure in RATE_FIGURES:
        return f"{value * 100:.1f} %"
    if figure in (Figure.LATENCY_P50_MS, Figure.LATENCY_P95_MS):
        return f"{value:,.0f} ms"
    if figure == Figure.COST_USD:
        return f"${value:,.2f}"
    if figure == Figure.BUDGET_USED_PERCENT:
        return f"{value:.1f} %"
    return f"{value:.3f}"


def rule_alert_key(rule: AlertRule) -> str:
    return f"rule:{rule.pk}"


def _raise_for(rule: AlertRule, reading: Reading, now: dt.datetime) -> None:
    figure = Figure(rule.figure)
    assert reading.value is not None
    target = f"{rule.registered_model.name}@{rule.alias}"
    title = (
        f"{figure.label} of {target} is {shown(figure, reading.value)} "
        f"({rule.comparison} {shown(figure, rule.threshold)})"
    )
    message = (
        f"Over {reading.source} ({reading.volume} requests), {figure.label.lower()} was "
        f"{shown(figure, reading.value)}; the rule raises an alert {rule.comparison} "
        f"{shown(figure, rule.threshold)} with at least {rule.min_volume} requests."
    )
    alert_raise(
        AlertRaise(
            project_id=rule.project_id,
            kind=AlertKind.RULE,
            key=rule_alert_key(rule),
            title=title,
            message=message,
            severity=Severity.WARNING,
            rule=rule,
            registered_model_id=rule.registered_model_id,
            value=reading.value,
            threshold=rule.threshold,
            cooldown=dt.timedelta(minutes=rule.cooldown_minutes),
        ),
        now=now,
    )


@dataclass(frozen=True)
class RuleOutcome:
    rule_id: int
    # "raised", "cleared", "quiet" (holds no alert) or "undecided" (too little traffic).
    outcome: str
    value: float | None


def rule_check(rule: AlertRule, cache: _WindowCache) -> RuleOutcome:
    reading = rule_reading(rule, cache)
    if reading.value is None or reading.volume < rule.min_volume:
        return RuleOutcome(rule.pk, "undecided", reading.value)
    if breaches(rule, reading.value):
        _raise_for(rule, reading, cache.now)
        return RuleOutcome(rule.pk, "raised", reading.value)
    figure = Figure(rule.figure)
    cleared = alert_clear(
        project_id=rule.project_id,
        key=rule_alert_key(rule),
        resolution=f"Back within the rule: {shown(figure, reading.value)} over {reading.source}.",
        now=cache.now,
    )
    return RuleOutcome(rule.pk, "cleared" if cleared else "quiet", reading.value)


def rules_check(
    rules: Iterable[AlertRule] | None = None, *, now: dt.datetime | None = None
) -> list[RuleOutcome]:
    """Check every enabled rule (or those given); one rule failing is logged and does not stop
    the others."""
    cache = _WindowCache(now or timezone.now())
    if rules is None:
        rules = AlertRule.objects.filter(enabled=True).select_related("registered_model")
    outcomes = []
    for rule in rules:
        try:
            outcomes.append(rule_check(rule, cache))
        except Exception:  # one broken rule must not silence every other one
            logger.exception("alert rule %s could not be checked", rule.pk)
    return outcomes
