"""A lead's walk through the alerts in a real browser: from the project page's count of
unresolved alerts to the list, into one alert, acknowledged and then resolved with a note,
which the list records with the lead's name; then a rule added on the rules page, after a
mistake the page names by field."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from catalog.models import BaseModel
from ftportal.models import Project
from monitoring.alerts import AlertRaise, alert_raise
from monitoring.models import AlertKind, AlertRule, AlertState, Severity
from tests.monitoring.traffic_builders import alias_to, served_version

from .conftest import login

pytestmark = pytest.mark.e2e


def test_a_lead_handles_an_alert_and_adds_a_rule(
    page: Page, live_server, project: Project, lead: User, base_model: BaseModel
) -> None:
    version = served_version(project, lead, base_model)
    alias_to(version)
    raised = alert_raise(
        AlertRaise(
            project_id=project.pk,
            kind=AlertKind.RULE,
            key="rule:walk",
            title="Error rate of triage@production is 12.0 % (above 5.0 %)",
            message="Over the last hour (200 requests), error rate was 12.0 %.",
            severity=Severity.WARNING,
        ),
        now=dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC),
    ).alert

    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.locator("#alerts-link").click()
    expect(page.locator(f"#alert-{raised.pk}")).to_contain_text("Error rate of triage@production")
    page.get_by_role("link", name="Error rate of triage@production is 12.0 % (above 5.0 %)").click()
    page.locator("#alert-acknowledge").click()
    expect(page.locator("#alert-state")).to_have_text("Acknowledged")
    expect(page.locator("#alert-acknowledged")).to_contain_text(lead.username)
    page.locator("#alert-note").fill("rolled back to v2")
    page.locator("#alert-resolve").click()
    expect(page.locator("#alert-state")).to_have_text("Resolved")
    expect(page.locator("#alert-resolved")).to_contain_text("rolled back to v2")
    raised.refresh_from_db()
    assert raised.state == AlertState.RESOLVED and raised.resolved_by == lead

    page.goto(f"{live_server.url}/projects/{project.pk}/alerts/")
    expect(page.locator("#alerts-none")).to_be_visible()
    page.locator("#alert-state-all").click()
    expect(page.locator(f"#alert-{raised.pk}")).to_contain_text(f"Resolved by {lead.username}")

    page.goto(f"{live_server.url}/projects/{project.pk}/alert-rules/")
    page.locator("#rule-figure").select_option("latency_p95_ms")
    page.locator("#rule-threshold").fill("fast")
    page.locator("#rule-save").click()
    expect(page.locator("#rule-error")).to_contain_text("threshold: expected a number")
    assert not AlertRule.objects.exists()
    page.locator("#rule-threshold").fill("2500")
    page.locator("#rule-save").click()
    rule = AlertRule.objects.get()
    expect(page.locator(f"#rule-{rule.pk}")).to_contain_text("Latency p95 (ms)")
    assert (rule.figure, rule.threshold, rule.alias) == ("latency_p95_ms", 2500.0, "production")
