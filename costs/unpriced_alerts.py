"""Alerts of unpriced spends: a spend the ledger recorded without a price (a model missing from
the price table, a side of it unknown) is counted, never summed as $0, and alerted once a
month per project and missing price: an ``UnpricedAlert`` row, listed on the dashboard, and
an e-mail to the project's managers, ML leads and admins, who can set the price.

The alert is raised after the spend commits (a rolled-back spend raises nothing): one read of
a unique index when it was raised already, which a batch of the gateway's log writer meeting a
model without a price pays off the request path.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet

from .budget_alerts import alert_recipients
from .budgets import month_of
from .models import LedgerEntry, UnpricedAlert

logger = logging.getLogger(__name__)


def unpriced_alert_on_commit(entry: LedgerEntry) -> None:
    """Raise the alert of ``entry`` (an unpriced ledger row) once its transaction commits."""
    # Robust: a mail server that fails must not fail the spender after its commit.
    transaction.on_commit(lambda: unpriced_alert_raise(entry), robust=True)


def unpriced_alert_raise(entry: LedgerEntry) -> UnpricedAlert:
    """The month's alert of what ``entry`` lacked a price for: made and e-mailed the first
    time; the unique row decides between processes, and only its maker e-mails."""
    month = month_of(entry.occurred_at)
    subject = entry.price_source[:300]
    alert, created = UnpricedAlert.objects.get_or_create(
        project_id=entry.project_id,
        month=month,
        subject=subject,
        defaults={"kind": entry.kind, "first_event": entry.event},
    )
    if created:
        _notify(alert, entry)
    return alert


def _notify(alert: UnpricedAlert, entry: LedgerEntry) -> None:
    project = alert.project
    subject = f"[ftportal] {project.name}: a spend has no price"
    body = (
        f"Project {project.name} recorded a {entry.get_kind_display().lower()} spend of "
        f"{entry.quantity.normalize():f} {entry.get_unit_display()} without a price "
        f"({alert.subject}). It is counted as unpriced, never as $0, and left out of the "
        f"totals until the model has a price: set one on the token prices page, "
        f"/costs/prices/. Other spends with the same gap this month raise no further e-mail.\n"
    )
    sent = []
    for address in alert_recipients(project):
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])
        except Exception:  # any mail backend's failure: the others still get theirs
            logger.exception("unpriced alert %s: no e-mail to %s", alert.pk, address)
            continue
        sent.append(address)
    if sent:
        alert.notified = "\n".join(sent)
        alert.save(update_fields=["notified"])


def unpriced_alerts_of(project_ids: tuple[int, ...], *, since: dt.date) -> QuerySet[UnpricedAlert]:
    """The alerts of these projects for the months from ``since``'s on, newest first."""
    return UnpricedAlert.objects.filter(
        project_id__in=project_ids, month__gte=since.replace(day=1)
    ).select_related("project")
