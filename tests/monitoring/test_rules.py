"""Alert rules: every production alias gets the defaults once; a rule reads its figure over its
window (the request log), from the alias's latest drift report, or from the project's budget;
it raises its alert when the figure crosses the threshold with enough requests, leaves it as it
is with too few, and resolves it by itself when the figure is back."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from costs.models import Budget, LedgerEntry
from ftportal.models import Project
from ftportal.spending import Spend, SpendKind, SpendUnit, spend_record
from monitoring.models import (
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    DriftReport,
    DriftStatus,
    Figure,
)
from monitoring.rules import DEFAULT_RULES, default_rules_ensure, rules_check
from registry.models import ModelVersion
from serving.model_names import alias_model_name
from serving.models import RequestStatus
from tests.monitoring.traffic_builders import (
    alias_to,
    generated_rows,
    rows_store,
    served_version,
)

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def version(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    version = served_version(project, lead, base_model)
    alias_to(version)
    return version


def _rule(
    version: ModelVersion,
    figure: Figure,
    comparison: Comparison,
    threshold: float,
    **changes: object,
) -> AlertRule:
    values: dict[str, object] = {
        "project": version.registered_model.project,
        "registered_model": version.registered_model,
        "alias": "production",
        "figure": figure,
        "comparison": comparison,
        "threshold": threshold,
        "window_minutes": 60,
        "min_volume": 20,
    }
    values.update(changes)
    return AlertRule.objects.create(**values)


def _traffic(
    version: ModelVersion,
    *,
    seed: int,
    count: int,
    start: dt.datetime,
    span: dt.timedelta = dt.timedelta(minutes=50),
) -> list:
    project = version.registered_model.project
    rows = generated_rows(
        seed=seed,
        count=count,
        names=[alias_model_name(project, version.registered_model, "production")],
        start=start,
        span=span,
        version_ids=[version.pk],
    )
    rows_store(project, rows)
    return rows


def test_every_production_alias_gets_the_default_rules_once(version):
    assert default_rules_ensure(version.registered_model) == len(DEFAULT_RULES)
    assert default_rules_ensure(version.registered_model) == 0
    rules = AlertRule.objects.filter(registered_model=version.registered_model)
    assert {rule.figure for rule in rules} == {default.figure for default in DEFAULT_RULES}
    assert all(rule.is_default and rule.enabled and rule.alias == "production" for rule in rules)
    drift = rules.get(figure=Figure.EMBEDDING_DRIFT_AUC)
    assert (drift.comparison, drift.threshold) == (Comparison.ABOVE, 0.55)


def test_an_error_rate_over_the_threshold_raises_and_its_value_is_the_windows(version):
    rows = _traffic(version, seed=1, count=400, start=NOW - dt.timedelta(minutes=55))
    rule = _rule(version, Figure.ERROR_RATE, Comparison.ABOVE, 0.02)
    [outcome] = rules_check([rule], now=NOW)
    counted = [row for row in rows if row.counted]
    expected = sum(row.status == RequestStatus.ERROR for row in counted) / len(counted)
    assert outcome.outcome == "raised"
    assert outcome.value == pytest.approx(expected)
    alert = Alert.objects.get(key=f"rule:{rule.pk}")
    assert alert.value == pytest.approx(expected) and alert.threshold == 0.02
    assert alert.title.startswith("Error rate of triage@production is ")
    assert f"({len(counted)} requests)" in alert.message

    # An hour later the window holds only calm traffic: the alert resolves by itself.
    later = NOW + dt.timedelta(hours=2)
    calm = _traffic(version, seed=2, count=60, start=later - dt.timedelta(minutes=30))
    assert any(row.counted for row in calm)
    ok_rule = AlertRule.objects.get(pk=rule.pk)
    ok_rule.threshold = 0.9
    ok_rule.save()
    [cleared] = rules_check([ok_rule], now=later)
    assert cleared.outcome == "cleared"
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_by is None
    assert alert.resolution.startswith("Back within the rule: ")


def test_too_few_requests_decide_nothing(version):
    _traffic(version, seed=3, count=10, start=NOW - dt.timedelta(minutes=30))
    rule = _rule(version, Figure.ERROR_RATE, Comparison.ABOVE, 0.0, min_volume=50)
    [outcome] = rules_check([rule], now=NOW)
    assert outcome.outcome == "undecided"
    assert not Alert.objects.exists()


def test_traffic_outside_the_window_is_not_read(version):
    _traffic(version, seed=4, count=300, start=NOW - dt.timedelta(hours=3))
    rule = _rule(version, Figure.REQUESTS, Comparison.BELOW, 1_000_000, min_volume=0)
    [outcome] = rules_check([rule], now=NOW)
    assert outcome.value == 0


def test_a_latency_rule_compares_the_windows_p95(version):
    rows = _traffic(version, seed=5, count=300, start=NOW - dt.timedelta(minutes=40))
    rule = _rule(version, Figure.LATENCY_P95_MS, Comparison.ABOVE, 100)
    [outcome] = rules_check([rule], now=NOW)
    assert outcome.outcome == "raised"
    assert 3000 < (outcome.value or 0) <= max(row.latency_ms for row in rows)
    assert Alert.objects.get().title.endswith("(above 100 ms)")


def _report(version: ModelVersion, *, at: dt.datetime, auc: float, count: int = 500) -> DriftReport:
    report = DriftReport.objects.create(
        project=version.registered_model.project,
        registered_model=version.registered_model,
        alias="production",
        model_version=version,
        window_start=at - dt.timedelta(hours=24),
        window_end=at,
        reference_count=1000,
        current_count=count,
        status=DriftStatus.DRIFTED if auc > 0.55 else DriftStatus.STABLE,
        figures={"embedding_drift_auc": {"current": auc, "threshold": 0.55, "drifted": auc > 0.55}},
    )
    DriftReport.objects.filter(pk=report.pk).update(created_at=at)
    return report


def test_a_drift_rule_reads_the_latest_report_within_its_window(version):
    rule = _rule(
        version, Figure.EMBEDDING_DRIFT_AUC, Comparison.ABOVE, 0.55, window_minutes=24 * 60
    )
    _report(version, at=NOW - dt.timedelta(hours=2), auc=0.5)
    _report(version, at=NOW - dt.timedelta(hours=1), auc=0.81)
    [outcome] = rules_check([rule], now=NOW)
    assert outcome.outcome == "raised" and outcome.value == 0.81
    alert = Alert.objects.get()
    assert "drift report of" in alert.message and "(500 requests)" in alert.message

    # A report older than the window says nothing; the raised alert stays as it is.
    [stale] = rules_check([rule], now=NOW + dt.timedelta(days=2))
    assert stale.outcome == "undecided"
    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN


def test_a_drift_report_on_too_few_requests_decides_nothing(version):
    rule = _rule(
        version,
        Figure.EMBEDDING_DRIFT_AUC,
        Comparison.ABOVE,
        0.55,
        window_minutes=24 * 60,
        min_volume=50,
    )
    _report(version, at=NOW - dt.timedelta(hours=1), auc=0.99, count=10)
    [outcome] = rules_check([rule], now=NOW)
    assert outcome.outcome == "undecided" and not Alert.objects.exists()


def test_a_budget_rule_reads_the_months_share_of_the_budget(version, lead):
    project = version.registered_model.project
    Budget.objects.create(project=project, monthly_usd=Decimal("10.00"), updated_by=lead)
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.TRAINING,
            quantity=Decimal(1),
            unit=SpendUnit.COMPUTE_SECONDS,
            price=Decimal("9.00"),
            price_per=Decimal(1),
            price_source="test",
            event="test:budget-rule",
            origin="a test spend",
        )
    )
    assert LedgerEntry.objects.filter(project=project).exists()
    rule = _rule(version, Figure.BUDGET_USED_PERCENT, Comparison.ABOVE, 80, min_volume=0)
    [outcome] = rules_check([rule])
    assert outcome.outcome == "raised" and outcome.value == pytest.approx(90.0)
    assert Alert.objects.get().title.endswith("is 90.0 % (above 80.0 %)")


def test_a_project_without_a_budget_decides_nothing(version):
    rule = _rule(version, Figure.BUDGET_USED_PERCENT, Comparison.ABOVE, 80, min_volume=0)
    [outcome] = rules_check([rule])
    assert outcome.outcome == "undecided"


def test_disabled_rules_are_not_checked(version):
    _traffic(version, seed=6, count=100, start=NOW - dt.timedelta(minutes=30))
    _rule(version, Figure.ERROR_RATE, Comparison.ABOVE, 0.0, enabled=False)
    assert rules_check(now=NOW) == []
