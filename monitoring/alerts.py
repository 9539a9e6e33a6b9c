"""Raising, clearing and handling alerts: the one path every monitor (rules, lifecycle
countdowns, retraining proposals, budgets) goes through.

An alert is named by its ``key``. Raising a key that has an unresolved alert updates that
alert rather than adding one; it is notified again only when nobody acknowledged it and the
cooldown since the key's last notification has passed (so a figure flapping around its
threshold, resolved and raised again, does not notify each time). Notifications go out after
the raising transaction commits."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from ftportal.errors import ConflictError
from ftportal.models import Project

from .models import Alert, AlertKind, AlertRule, AlertState, Severity
from .notifications import alert_deliver

logger = logging.getLogger(__name__)

DEFAULT_COOLDOWN = dt.timedelta(hours=1)


@dataclass(frozen=True)
class AlertRaise:
    """What a monitor found: the alert's key and words, and what it concerns."""

    project_id: int
    kind: AlertKind
    key: str
    title: str
    message: str = ""
    severity: Severity = Severity.WARNING
    rule: AlertRule | None = None
    registered_model_id: int | None = None
    model_version_id: int | None = None
    value: float | None = None
    threshold: float | None = None
    cooldown: dt.timedelta = DEFAULT_COOLDOWN
    # False when the raiser e-mails on its own (budgets do, with their own wording): the
    # alert is then only listed and posted to the webhook.
    email: bool = True


@dataclass(frozen=True)
class Raised:
    alert: Alert
    created: bool
    # Whether it is notified (after commit) this time.
    notifies: bool


def _unresolved(project_id: int, key: str) -> QuerySet[Alert]:
    return Alert.objects.filter(project_id=project_id, key=key).exclude(state=AlertState.RESOLVED)


def _last_notified(project_id: int, key: str) -> dt.datetime | None:
    found = Alert.objects.filter(project_id=project_id, key=key).aggregate(
        last=Max("last_notified_at")
    )
    last: dt.datetime | None = found["last"]
    return last


def alert_raise(found: AlertRaise, *, now: dt.datetime | None = None) -> Raised:
    """Raise (or raise again) the alert ``found`` names; notify after commit when due."""
    now = now or timezone.now()
    with transaction.atomic():
        # Locked: two monitors raising one key at once must count twice on one row, and only
        # one of them may notify.
        alert = _unresolved(found.project_id, found.key).select_for_update().first()
        created = alert is None
        if alert is None:
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        project_id=found.project_id,
                        kind=found.kind,
                        key=found.key,
                        first_raised_at=now,
                        last_raised_at=now,
                        **_words_of(found),
                    )
            except IntegrityError:
                # Another process made it between our read and our insert: raise that one.
                alert = _unresolved(found.project_id, found.key).select_for_update().get()
                created = False
        if not created:
            for field, value in _words_of(found).items():
                setattr(alert, field, value)
            alert.last_raised_at = now
            alert.times_raised += 1
        last = _last_notified(found.project_id, found.key)
        notifies = alert.state == AlertState.OPEN and (last is None or now - last >= found.cooldown)
        if notifies:
            alert.last_notified_at = now
        alert.save()
        if notifies:
            transaction.on_commit(lambda: _notify(alert.pk, email=found.email), robust=True)
    return Raised(alert=alert, created=created, notifies=notifies)


def _words_of(found: AlertRaise) -> dict[str, object]:
    return {
        "severity": found.severity,
        "rule": found.rule,
        "registered_model_id": found.registered_model_id,
        "model_version_id": found.model_version_id,
        "title": found.title[:300],
        "message": found.message,
        "value": found.value,
        "threshold": found.threshold,
    }


def _notify(alert_id: int, *, email: bool) -> None:
    alert = Alert.objects.select_related("project").get(pk=alert_id)
    delivery = alert_deliver(alert, email=email)
    Alert.objects.filter(pk=alert_id).update(notified=delivery.in_words)


def alert_clear(
    *, project_id: int, key: str, resolution: str, now: dt.datetime | None = None
) -> Alert | None:
    """Resolve the key's unresolved alert by itself (its condition is gone), naming why; the
    alert resolved, or None when none was raised."""
    with transaction.atomic():
        # Locked: a lead resolving it by hand at the same moment must not be overwritten.
        alert = _unresolved(project_id, key).select_for_update().first()
        if alert is None:
            return None
        alert.state = AlertState.RESOLVED
        alert.resolved_at = now or timezone.now()
        alert.resolved_by = None
        alert.resolution = resolution
        alert.save(update_fields=["state", "resolved_at", "resolved_by", "resolution"])
    return alert


# --- a lead handling alerts ---------------------------------------------------------------------


def alerts_of(project: Project) -> QuerySet[Alert]:
    """The project's alerts, newest raised first, with who handled each."""
    return Alert.objects.filter(project=project).select_related(
        "acknowledged_by", "resolved_by", "registered_model", "model_version", "rule"
    )


# The alert list's filters: a state, or every alert not resolved, or all of them.
STATE_FILTERS = ("unresolved", *AlertState.values, "all")


def alerts_in_state(project: Project, wanted: str) -> QuerySet[Alert]:
    """The project's alerts in one of STATE_FILTERS."""
    alerts = alerts_of(project)
    if wanted == "unresolved":
        return alerts.exclude(state=AlertState.RESOLVED)
    if wanted == "all":
        return alerts
    return alerts.filter(state=wanted)


def unresolved_alert_count(project: Project) -> int:
    return Alert.objects.filter(project=project).exclude(state=AlertState.RESOLVED).count()


def alert_in_project(project: Project, alert_id: int) -> Alert:
    """One alert of the project; 404 for any other id (another project's included)."""
    return get_object_or_404(alerts_of(project), pk=alert_id)


def alert_acknowledge(*, alert: Alert, user: User, now: dt.datetime | None = None) -> Alert:
    """``user`` has seen the alert and is on it: it is not notified again while unresolved.
    Only an open alert is acknowledged (409 otherwise)."""
    with transaction.atomic():
        # Locked: two leads acknowledging at once must not both be recorded as the one.
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.state != AlertState.OPEN:
            raise ConflictError(f"This alert is {alert.get_state_display().lower()} already.")
        alert.state = AlertState.ACKNOWLEDGED
        alert.acknowledged_by = user
        alert.acknowledged_at = now or timezone.now()
        alert.save(update_fields=["state", "acknowledged_by", "acknowledged_at"])
    return alert


def alert_resolve(
    *, alert: Alert, user: User, note: str = "", now: dt.datetime | None = None
) -> Alert:
    """``user`` resolved the alert (with an optional note); a resolved alert is not resolved
    again (409). Raised again later, the key starts a new alert."""
    with transaction.atomic():
        # Locked: the monitor resolving it by itself at the same moment must not be the one
        # recorded after the lead's.
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.state == AlertState.RESOLVED:
            raise ConflictError("This alert is resolved already.")
        alert.state = AlertState.RESOLVED
        alert.resolved_by = user
        alert.resolved_at = now or timezone.now()
        alert.resolution = note.strip()
        alert.save(update_fields=["state", "resolved_by", "resolved_at", "resolution"])
    return alert
