"""Alerts: one unresolved alert per key, notified by e-mail and to the project's webhook at
most once per cooldown, never while acknowledged; a lead acknowledges and resolves, a monitor
resolves by itself; a failing channel loses nothing."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone

from ftportal.errors import ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from monitoring.alerts import (
    AlertRaise,
    alert_acknowledge,
    alert_clear,
    alert_raise,
    alert_resolve,
)
from monitoring.models import (
    Alert,
    AlertKind,
    AlertState,
    MonitoringSettings,
    Severity,
    WebhookDestination,
)
from monitoring.notifications import webhook_payload
from tests.monitoring.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
HOSTILE = "<!channel> & <script>alert(1)</script>"


@pytest.fixture
def notified_members(make_member: Callable[..., User]) -> dict[str, User]:
    """One member per role, each with an address."""
    members = {}
    for role in Role:
        user = make_member(role)
        user.email = f"{role.value}@example.test"
        user.save()
        members[role.value] = user
    return members


def _found(project: Project, key: str = "rule:1", **changes: object) -> AlertRaise:
    values: dict[str, object] = {
        "project_id": project.pk,
        "kind": AlertKind.RULE,
        "key": key,
        "title": f"Error rate of {HOSTILE}@production is 12.0 % (above 5.0 %)",
        "message": "Over the last hour (200 requests), error rate was 12.0 %.",
        "severity": Severity.WARNING,
        "value": 0.12,
        "threshold": 0.05,
        "cooldown": dt.timedelta(hours=1),
    }
    values.update(changes)
    return AlertRaise(**values)  # type: ignore[arg-type]


def test_a_raised_alert_is_emailed_to_managers_leads_and_admins_once_each(
    project, notified_members, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        raised = alert_raise(_found(project), now=T0)
    assert raised.created and raised.notifies
    assert sorted(address for message in mail.outbox for address in message.to) == [
        "admin@example.test",
        "manager@example.test",
        "ml_lead@example.test",
    ]
    assert all(len(message.to) == 1 for message in mail.outbox)
    assert mail.outbox[0].subject.startswith("[ftportal] Ticket triage: Error rate of")
    assert f"/projects/{project.pk}/alerts/{raised.alert.pk}/" in mail.outbox[0].body
    alert = Alert.objects.get()
    assert alert.state == AlertState.OPEN and alert.notified == "e-mail to 3"
    assert alert.last_notified_at == T0


def test_raising_again_within_the_cooldown_updates_the_alert_and_notifies_nobody(
    project, notified_members, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        alert_raise(_found(project), now=T0)
        again = alert_raise(_found(project, value=0.2), now=T0 + dt.timedelta(minutes=59))
    assert not again.created and not again.notifies
    assert len(mail.outbox) == 3
    alert = Alert.objects.get()
    assert alert.times_raised == 2 and alert.value == 0.2
    assert alert.last_raised_at == T0 + dt.timedelta(minutes=59)
    assert alert.first_raised_at == T0

    with django_capture_on_commit_callbacks(execute=True):
        late = alert_raise(_found(project), now=T0 + dt.timedelta(minutes=61))
    assert late.notifies and len(mail.outbox) == 6
    assert Alert.objects.count() == 1


def test_an_acknowledged_alert_is_not_notified_again(
    project, notified_members, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        raised = alert_raise(_found(project), now=T0)
    alert_acknowledge(alert=raised.alert, user=notified_members["ml_lead"], now=T0)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        later = alert_raise(_found(project), now=T0 + dt.timedelta(hours=5))
    assert not later.notifies and mail.outbox == []
    alert = Alert.objects.get()
    assert alert.state == AlertState.ACKNOWLEDGED and alert.times_raised == 2
    assert alert.acknowledged_by == notified_members["ml_lead"]


def test_a_flapping_figure_is_not_notified_each_time_it_comes_back(
    project, notified_members, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        alert_raise(_found(project), now=T0)
    cleared = alert_clear(
        project_id=project.pk,
        key="rule:1",
        resolution="Back within the rule.",
        now=T0 + dt.timedelta(minutes=10),
    )
    assert cleared is not None and cleared.resolved_by is None
    assert cleared.state == AlertState.RESOLVED and cleared.resolution == "Back within the rule."
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        back = alert_raise(_found(project), now=T0 + dt.timedelta(minutes=20))
    # A new alert (the old one is resolved), but within the key's cooldown: listed, not sent.
    assert back.created and not back.notifies and mail.outbox == []
    assert Alert.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        alert_clear(project_id=project.pk, key="rule:1", resolution="ok", now=T0)
        after = alert_raise(_found(project), now=T0 + dt.timedelta(minutes=70))
    assert after.notifies and len(mail.outbox) == 3


def test_clearing_a_key_with_no_alert_changes_nothing(project):
    assert alert_clear(project_id=project.pk, key="rule:9", resolution="ok") is None
    assert not Alert.objects.exists()


def test_a_lead_acknowledges_and_resolves_once(project, lead):
    raised = alert_raise(_found(project), now=T0)
    alert = alert_acknowledge(alert=raised.alert, user=lead)
    with pytest.raises(ConflictError, match="acknowledged already"):
        alert_acknowledge(alert=alert, user=lead)
    alert = alert_resolve(alert=alert, user=lead, note="  rolled back to v3  ")
    assert alert.state == AlertState.RESOLVED and alert.resolved_by == lead
    assert alert.resolution == "rolled back to v3" and alert.resolved_at is not None
    with pytest.raises(ConflictError, match="resolved already"):
        alert_resolve(alert=alert, user=lead)
    with pytest.raises(ConflictError):
        alert_acknowledge(alert=alert, user=lead)


def test_alerts_of_two_projects_with_one_key_are_apart(project, lead):
    other = Project.objects.create(name="Other")
    alert_raise(_found(project), now=T0)
    alert_raise(_found(other), now=T0)
    assert Alert.objects.filter(key="rule:1").count() == 2


def test_the_webhook_gets_slack_json_with_user_content_escaped(
    project, notified_members, django_capture_on_commit_callbacks
):
    with webhook_receiver() as receiver:
        hook = WebhookDestination.objects.create(name="ops-slack", url=receiver.url)
        MonitoringSettings.objects.create(project=project, webhook=hook, email_enabled=False)
        with django_capture_on_commit_callbacks(execute=True):
            raised = alert_raise(_found(project), now=T0)
    assert mail.outbox == []  # e-mail switched off for the project
    assert len(receiver.received) == 1
    body = receiver.received[0]
    assert receiver.content_types == ["application/json"]
    assert body["text"].startswith("[WARNING] Ticket triage: Error rate of ")
    # Slack reads <...> as mentions and links: the model name arrives as its characters.
    assert "&lt;!channel&gt; &amp; &lt;script&gt;" in body["text"]
    assert "<!channel>" not in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]
    assert f"/projects/{project.pk}/alerts/{raised.alert.pk}/" in body["text"]
    assert Alert.objects.get().notified == "webhook ops-slack"


def test_a_failing_webhook_loses_neither_the_alert_nor_the_emails_and_logs_no_url(
    project, notified_members, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.WARNING, logger="monitoring.notifications")
    with webhook_receiver() as receiver:
        receiver.status = 500
        hook = WebhookDestination.objects.create(name="ops-slack", url=receiver.url)
        MonitoringSettings.objects.create(project=project, webhook=hook)
        with django_capture_on_commit_callbacks(execute=True):
            alert_raise(_found(project), now=T0)
    assert len(receiver.received) == 1
    assert len(mail.outbox) == 3
    alert = Alert.objects.get()
    assert alert.notified == "e-mail to 3" and alert.state == AlertState.OPEN
    assert "ops-slack" in caplog.text and "500" in caplog.text
    assert "secret-part" not in caplog.text


def test_a_webhook_that_is_not_http_is_never_opened(
    project, notified_members, django_capture_on_commit_callbacks, tmp_path
):
    target = tmp_path / "file"
    target.write_text("x")
    hook = WebhookDestination.objects.create(name="odd", url=f"file://{target}")
    MonitoringSettings.objects.create(project=project, webhook=hook, email_enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        alert_raise(_found(project), now=T0)
    assert Alert.objects.get().notified == "nobody (no channel reached)"


def test_a_disabled_webhook_is_skipped(
    project, notified_members, django_capture_on_commit_callbacks
):
    with webhook_receiver() as receiver:
        hook = WebhookDestination.objects.create(name="ops", url=receiver.url, enabled=False)
        MonitoringSettings.objects.create(project=project, webhook=hook)
        with django_capture_on_commit_callbacks(execute=True):
            alert_raise(_found(project), now=T0)
    assert receiver.received == []
    assert len(mail.outbox) == 3


def test_the_payload_names_the_severity_and_the_message():
    project = Project(name="P & Q", pk=7)
    alert = Alert(
        pk=3,
        project=project,
        title="t",
        message="line <1>",
        severity=Severity.CRITICAL,
        first_raised_at=timezone.now(),
        last_raised_at=timezone.now(),
    )
    text = webhook_payload(alert)["text"]
    assert text == "[CRITICAL] P &amp; Q: t\nline &lt;1&gt;\n/projects/7/alerts/3/"


def test_notifications_link_to_the_alert_on_the_sites_own_address(
    project, notified_members, django_capture_on_commit_callbacks, settings
):
    settings.FTPORTAL_SITE_URL = "https://ftportal.example.com"
    with webhook_receiver() as receiver:
        hook = WebhookDestination.objects.create(name="ops-slack", url=receiver.url)
        MonitoringSettings.objects.create(project=project, webhook=hook)
        with django_capture_on_commit_callbacks(execute=True):
            raised = alert_raise(_found(project), now=T0)
    link = f"https://ftportal.example.com/projects/{project.pk}/alerts/{raised.alert.pk}/"
    assert link in mail.outbox[0].body
    assert receiver.received[0]["text"].endswith(link)
