"""Budget alerts: when a project's month reaches 80 % and 100 % of its budget, one alert each,
kept in-app (``BudgetAlert``, acknowledged by a lead) and e-mailed to the project's managers,
ML leads and admins. (The monitoring issue's alerting will carry them once it lands.)

The check runs after the spends that may reach a threshold are committed: a rolled-back
spend fires nothing. The gateway's request log writer records spends in batches several times
a second, so the check is registered once per project per transaction however many spends it
holds (:func:`budget_check_on_commit`), and reads only the project's budget and its month's
ledger days. Each alert is one row, unique per project, month and threshold, so it fires once
even when two processes check at the same moment; only the process whose insert made the row
sends its e-mail. A check that finds the cap reached also refuses the gateway's chat requests
(``budgets.gateway_refusal_sync``).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from ftportal.errors import ConflictError
from ftportal.models import Membership, Project
from ftportal.roles import Role
from monitoring.alerts import AlertRaise, alert_raise
from monitoring.models import AlertKind, Severity

from .budgets import (
    BudgetStatus,
    budget_status_of,
    dollars,
    gateway_refusal_sync,
    month_of,
)
from .models import Budget, BudgetAlert

logger = logging.getLogger(__name__)

# Who hears of an alert: those who read the project's costs, not its reviewers.
ALERTED_ROLES = (Role.MANAGER, Role.ML_LEAD, Role.ADMIN)


# --- when to check --------------------------------------------------------------------------


class _BudgetCheck:
    """The after-commit check of one project: a callable that says which project it checks
    and whether it has run, so that a transaction registers one per project
    (:func:`budget_check_on_commit`)."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.ran = False

    def __call__(self) -> None:
        self.ran = True
        budget_check(self.project_id)


def budget_check_on_commit(project_id: int) -> None:
    """Check the project's budget once the current transaction commits (at once outside one),
    once per transaction however many spends it records."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        # A check still waiting in this transaction serves this spend too: Django drops the
        # callbacks of a savepoint as it rolls back, so one still listed goes only with a
        # rollback that takes this spend with it.
        for _, callback, _ in connection.run_on_commit:
            if (
                isinstance(callback, _BudgetCheck)
                and callback.project_id == project_id
                and not callback.ran
            ):
                return
    # Robust: a failing check (the mail server down) must not fail the spender after its
    # commit; it is logged, and the next spend checks again.
    transaction.on_commit(_BudgetCheck(project_id), robust=True)


# --- checking -------------------------------------------------------------------------------


def budget_check(project_id: int, *, now: dt.datetime | None = None) -> list[BudgetAlert]:
    """Fire the alerts the project's month has reached and not yet fired, and refuse its
    gateway requests when its hard cap is reached; the alerts fired now. Reads nothing more
    for a project without a budget, or under its first threshold, than the budget and the
    month's ledger days."""
    budget = Budget.objects.filter(project_id=project_id).select_related("project").first()
    if budget is None:
        return []
    status = budget_status_of(budget, now=now)
    gateway_refusal_sync(status, clear=False)
    return _alerts_fire(status)


def budget_changed(project_id: int) -> None:
    """After a budget was set or changed (committed): the gateway's refusal follows its new
    figures, either way, and the alerts they reach fire."""
    budget = Budget.objects.filter(project_id=project_id).select_related("project").first()
    if budget is None:
        return
    status = budget_status_of(budget)
    gateway_refusal_sync(status, clear=True)
    _alerts_fire(status)


def _alerts_fire(status: BudgetStatus) -> list[BudgetAlert]:
    reached = status.thresholds_reached
    if not reached:
        return []
    budget = status.budget
    assert budget is not None
    fired_before = set(
        BudgetAlert.objects.filter(project=status.project, month=status.month).values_list(
            "threshold_percent", flat=True
        )
    )
    fired = []
    for threshold in reached:
        if threshold in fired_before:
            continue
        # The unique constraint decides between processes checking at once: get_or_create
        # reads the other's row after its insert fails, and only the inserter e-mails.
        alert, created = BudgetAlert.objects.get_or_create(
            project=status.project,
            month=status.month,
            threshold_percent=threshold,
            defaults={"spent_usd": status.spent_usd, "budget_usd": budget.monthly_usd},
        )
        if created:
            _alert_notify(alert, status)
            _alert_list(alert, status)
            fired.append(alert)
    return fired


# --- telling people -----------------------------------------------------------------------------


def alert_recipients(project: Project) -> list[str]:
    """The addresses of the project's managers, ML leads and admins that have one."""
    addresses = (
        Membership.objects.filter(project=project, role__in=ALERTED_ROLES, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted(set(addresses))


def alert_text(alert: BudgetAlert, status: BudgetStatus) -> tuple[str, str]:
    """The alert's e-mail: its subject and body."""
    project = status.project
    subject = f"[ftportal] {project.name} reached {alert.threshold_percent} % of its monthly budget"
    lines = [
        f"Project {project.name} has spent {dollars(alert.spent_usd)} of its "
        f"{dollars(alert.budget_usd)} budget for {alert.month:%B %Y} "
        f"({alert.threshold_percent} % alert).",
    ]
    if status.unpriced_entries:
        lines.append(
            f"{status.unpriced_entries} spends this month have no known price and are not in "
            "that figure."
        )
    if status.over_cap:
        lines.append(
            "The budget has a hard cap: new training jobs, hosted evaluations and gateway "
            "requests are refused until next month or until a lead raises the budget."
        )
    elif alert.threshold_percent >= 100 and status.budget is not None:
        lines.append("The budget has no hard cap: spending goes on.")
    lines.append(f"The budget's page: /projects/{project.pk}/budget/")
    return subject, "\n\n".join(lines) + "\n"


def _alert_notify(alert: BudgetAlert, status: BudgetStatus) -> None:
    """E-mail the alert, one message per address (members need not see each other's), and
    record the addresses it reached. The alert stays in-app whatever the mail server does."""
    subject, body = alert_text(alert, status)
    sent = []
    for address in alert_recipients(status.project):
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])
        except Exception:  # any mail backend's failure: the others still get theirs
            logger.exception("budget alert %s: no e-mail to %s", alert.pk, address)
            continue
        sent.append(address)
    if sent:
        alert.notified = "\n".join(sent)
        alert.save(update_fields=["notified"])


def _alert_list(alert: BudgetAlert, status: BudgetStatus) -> None:
    """Put the alert in the project's alert list too (``monitoring``), and post it to the
    project's webhook; it was e-mailed above in the budget's own words."""
    subject, body = alert_text(alert, status)
    alert_raise(
        AlertRaise(
            project_id=status.project.pk,
            kind=AlertKind.BUDGET,
            key=f"budget:{alert.month:%Y-%m}:{alert.threshold_percent}",
            title=subject.removeprefix("[ftportal] "),
            message=body.strip(),
            severity=Severity.CRITICAL if alert.threshold_percent >= 100 else Severity.WARNING,
            email=False,
        )
    )


# --- reading and acknowledging ------------------------------------------------------------------


def budget_alerts_of(project: Project) -> QuerySet[BudgetAlert]:
    """The project's alerts, newest first, with who acknowledged each."""
    return BudgetAlert.objects.filter(project=project).select_related("acknowledged_by")


def budget_alert_in_project(project: Project, alert_id: int) -> BudgetAlert:
    """One alert of the project; 404 for any other id (another project's included)."""
    return get_object_or_404(budget_alerts_of(project), pk=alert_id)


def budget_alert_acknowledge(*, alert: BudgetAlert, user: User) -> BudgetAlert:
    """Mark the alert as seen by ``user``; acknowledged once (409 a second time)."""
    with transaction.atomic():
        # Locked: two leads acknowledging at once must not both be recorded as the one.
        alert = BudgetAlert.objects.select_for_update().get(pk=alert.pk)
        if alert.acknowledged_at is not None:
            when = f"{alert.acknowledged_at:%Y-%m-%d %H:%M} UTC"
            raise ConflictError(f"This alert was already acknowledged at {when}.")
        alert.acknowledged_by = user
        alert.acknowledged_at = timezone.now()
        alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
    return alert


def month_alerts_unacknowledged(project: Project, *, now: dt.datetime | None = None) -> int:
    """How many of this month's alerts no lead has acknowledged yet."""
    month = month_of(now or timezone.now())
    return BudgetAlert.objects.filter(
        project=project, month=month, acknowledged_at__isnull=True
    ).count()
