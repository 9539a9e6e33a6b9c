"""The alert list and page, the rules and the settings, as pages and API: every member reads
them, only leads and admins change them, an outsider sees no project, a bad field is refused by
name with nothing stored, and what users and models wrote is escaped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from ftportal.models import Membership, Project
from ftportal.roles import Role
from monitoring.alerts import AlertRaise, alert_raise
from monitoring.models import (
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    MonitoringSettings,
    WebhookDestination,
)
from monitoring.rules import default_rules_ensure
from registry.models import ModelVersion
from tests.monitoring.traffic_builders import alias_to, served_version

pytestmark = pytest.mark.django_db

HOSTILE = "<script>window.__xss=1</script>"


def logged_in(user: User) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def version(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    version = served_version(project, lead, base_model)
    alias_to(version)
    return version


@pytest.fixture
def alert(project: Project) -> Alert:
    return alert_raise(
        AlertRaise(
            project_id=project.pk,
            kind=AlertKind.RULE,
            key="rule:1",
            title=f"Error rate of {HOSTILE} is high",
            message=f"model said {HOSTILE}",
        ),
        now=dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
    ).alert


def test_every_member_reads_the_alerts_escaped_and_only_leads_see_the_buttons(
    project: Project, alert: Alert, make_member: Callable[..., User], lead: User
) -> None:
    reviewer = make_member(Role.REVIEWER)
    listed = logged_in(reviewer).get(reverse("monitoring_alerts", args=[project.pk]))
    assert listed.status_code == 200
    text = listed.content.decode()
    assert HOSTILE not in text and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in text
    detail = logged_in(reviewer).get(reverse("monitoring_alert", args=[project.pk, alert.pk]))
    assert detail.status_code == 200 and 'id="alert-acknowledge"' not in detail.content.decode()
    assert HOSTILE not in detail.content.decode()
    lead_view = logged_in(lead).get(reverse("monitoring_alert", args=[project.pk, alert.pk]))
    assert 'id="alert-acknowledge"' in lead_view.content.decode()


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_reviewers_and_managers_cannot_handle_alerts(
    project: Project, alert: Alert, make_member: Callable[..., User], role: Role
) -> None:
    user = make_member(role)
    page = logged_in(user).post(
        reverse("monitoring_alert_acknowledge", args=[project.pk, alert.pk])
    )
    api = logged_in(user).post(f"/api/projects/{project.pk}/alerts/{alert.pk}/resolve/")
    assert (page.status_code, api.status_code) == (403, 403)
    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN


def test_a_lead_acknowledges_on_the_page_and_resolves_through_the_api(
    project: Project, alert: Alert, lead: User
) -> None:
    browser = logged_in(lead)
    done = browser.post(reverse("monitoring_alert_acknowledge", args=[project.pk, alert.pk]))
    assert done.status_code == 302
    again = browser.post(reverse("monitoring_alert_acknowledge", args=[project.pk, alert.pk]))
    assert again.status_code == 409
    resolved = browser.post(
        f"/api/projects/{project.pk}/alerts/{alert.pk}/resolve/",
        {"note": "fixed the prompt"},
        content_type="application/json",
    )
    assert resolved.status_code == 200
    body = resolved.json()
    assert (body["state"], body["resolved_by"], body["acknowledged_by"]) == (
        "resolved",
        lead.username,
        lead.username,
    )
    assert body["resolution"] == "fixed the prompt"
    listed = browser.get(f"/api/projects/{project.pk}/alerts/?state=unresolved").json()
    assert listed["count"] == 0
    assert browser.get(f"/api/projects/{project.pk}/alerts/?state=all").json()["count"] == 1
    bad = browser.get(f"/api/projects/{project.pk}/alerts/?state=later")
    assert bad.status_code == 400 and "state" in bad.json()["error"]["fields"]
    assert (
        browser.get(reverse("monitoring_alerts", args=[project.pk]) + "?state=x").status_code == 400
    )


def test_an_outsider_sees_neither_the_alerts_nor_another_projects_alert(
    project: Project, alert: Alert, lead: User
) -> None:
    outsider = User.objects.create_user(username="outsider", password="pw")
    assert (
        logged_in(outsider).get(reverse("monitoring_alerts", args=[project.pk])).status_code == 404
    )
    assert logged_in(outsider).get(f"/api/projects/{project.pk}/alerts/").status_code == 404
    other = Project.objects.create(name="Other")
    Membership.objects.create(project=other, user=outsider, role=Role.ML_LEAD)
    stolen = logged_in(outsider).post(
        reverse("monitoring_alert_acknowledge", args=[other.pk, alert.pk])
    )
    assert stolen.status_code == 404


def test_a_lead_adds_a_rule_and_a_mistake_names_its_field(
    project: Project, version: ModelVersion, lead: User
) -> None:
    browser = logged_in(lead)
    target = f"{version.registered_model_id}:production"
    fields = {
        "target": target,
        "figure": "error_rate",
        "comparison": "above",
        "threshold": "0.1",
        "window_minutes": "30",
        "min_volume": "10",
        "cooldown_minutes": "15",
        "enabled": "on",
    }
    saved = browser.post(reverse("monitoring_rules", args=[project.pk]), fields)
    assert saved.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.threshold, rule.window_minutes, rule.created_by, rule.enabled) == (
        0.1,
        30,
        lead,
        True,
    )
    for field, wrong in (
        ("threshold", "nan"),
        ("window_minutes", "0"),
        ("figure", "mood"),
        ("target", "999999:production"),
    ):
        refused = browser.post(
            reverse("monitoring_rules", args=[project.pk]), {**fields, field: wrong}
        )
        assert refused.status_code == 400
        named = "registered_model" if field == "target" else field
        assert f"{named}: " in refused.content.decode()
    assert AlertRule.objects.count() == 1


def test_a_default_rule_is_disabled_not_deleted_and_keeps_its_figure(
    project: Project, version: ModelVersion, lead: User
) -> None:
    default_rules_ensure(version.registered_model)
    rule = AlertRule.objects.get(figure="error_rate")
    api = logged_in(lead)
    url = f"/api/projects/{project.pk}/alert-rules/{rule.pk}/"
    body = {
        "registered_model": version.registered_model_id,
        "alias": "production",
        "figure": "latency_p95_ms",
        "comparison": "above",
        "threshold": 0.2,
        "window_minutes": 60,
        "min_volume": 20,
        "cooldown_minutes": 60,
    }
    refused = api.put(url, body, content_type="application/json")
    assert refused.status_code == 400 and "figure" in refused.json()["error"]["message"]
    changed = api.put(url, {**body, "figure": "error_rate"}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.2
    assert api.delete(url).status_code == 204
    rule.refresh_from_db()
    assert rule.enabled is False and rule.threshold == 0.2


def test_a_manager_reads_the_rules_but_cannot_add_one(
    project: Project, version: ModelVersion, make_member: Callable[..., User]
) -> None:
    default_rules_ensure(version.registered_model)
    manager = logged_in(make_member(Role.MANAGER))
    page = manager.get(reverse("monitoring_rules", args=[project.pk]))
    assert page.status_code == 200 and 'id="rule-form"' not in page.content.decode()
    listed = manager.get(f"/api/projects/{project.pk}/alert-rules/").json()
    assert listed["count"] == 7
    posted = manager.post(
        f"/api/projects/{project.pk}/alert-rules/", {}, content_type="application/json"
    )
    assert posted.status_code == 403


def test_leads_pick_a_registered_webhook_by_name_and_never_type_a_url(
    project: Project, lead: User, make_member: Callable[..., User]
) -> None:
    hook = WebhookDestination.objects.create(
        name="ops-slack", url="https://hooks.example/T/B/secret"
    )
    api = logged_in(lead)
    body = {
        "email_enabled": False,
        "webhook": "ops-slack",
        "drift_window_hours": 6,
        "drift_min_requests": 30,
        "retrain_min_new_examples": 50,
    }
    saved = api.put(
        f"/api/projects/{project.pk}/monitoring/settings/", body, content_type="application/json"
    )
    assert saved.status_code == 200 and saved.json()["webhook"] == "ops-slack"
    assert MonitoringSettings.objects.get(project=project).webhook == hook
    typed = api.put(
        f"/api/projects/{project.pk}/monitoring/settings/",
        {**body, "webhook": "https://evil.example/"},
        content_type="application/json",
    )
    assert typed.status_code == 400 and "webhook" in typed.json()["error"]["message"]
    assert MonitoringSettings.objects.get(project=project).webhook == hook
    reviewer_page = logged_in(make_member(Role.REVIEWER)).get(
        reverse("monitoring_settings", args=[project.pk])
    )
    text = reviewer_page.content.decode()
    assert reviewer_page.status_code == 200 and "ops-slack" in text and "secret" not in text
    assert 'id="settings-form"' not in text


def test_the_project_page_counts_unresolved_alerts(
    project: Project, alert: Alert, lead: User
) -> None:
    text = logged_in(lead).get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "(1 unresolved)" in text
