"""Scheduled work of monitoring (celery beat): thin tasks, ids in, services do the work."""

from __future__ import annotations

from celery import shared_task

from . import retraining
from .drift import drift_reports_run
from .lifecycle_alerts import lifecycle_alerts_check
from .models import DRIFT_FIGURES, AlertRule
from .rules import default_rules_ensure_everywhere, rules_check


@shared_task
def alert_rules_check() -> int:
    """Give every production alias its default rules, then check every enabled rule; the
    number of rules whose alert is raised. No retries: the next run checks again."""
    default_rules_ensure_everywhere()
    return sum(outcome.outcome == "raised" for outcome in rules_check())


@shared_task
def drift_reports_compute() -> int:
    """A drift report for every production alias, then the drift rules read them at once;
    the number of reports made."""
    reports = drift_reports_run()
    default_rules_ensure_everywhere()
    drift_rules = AlertRule.objects.filter(enabled=True, figure__in=DRIFT_FIGURES).select_related(
        "registered_model"
    )
    rules_check(drift_rules)
    return len(reports)


@shared_task
def lifecycle_alerts_check_daily() -> int:
    """Raise the retirement countdown of every production version and resolve those no
    longer due; the number of alerts made new. No retries: the next day's run checks again."""
    return sum(done.created for done in lifecycle_alerts_check())


@shared_task
def retrain_checks_run() -> int:
    """Queue the gating evaluation of every accepted retrain whose version is registered, then
    check every production alias for a reason to propose a retrain; the open proposals. No
    retries: the next run checks again, and neither step does anything twice."""
    retraining.retrain_followups_run()
    return retraining.retrain_checks_run()
