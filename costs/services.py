"""Writing the ledger: a spend reported through ``ftportal.spending`` becomes one row, and the
day's sums the dashboards read (``LedgerDay``) take it in, in the same transaction."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Q, Sum

from ftportal.spending import Spend, SpendUnit, SpentQuery

from .models import LedgerDay, LedgerEntry
from .unpriced_alerts import unpriced_alert_on_commit

logger = logging.getLogger(__name__)


def ledger_entry_record(*, spend: Spend) -> LedgerEntry:
    """The ledger row of ``spend``, written once: a spend reported again under the same event
    (a retried task) returns the row already written. An unpriced spend is logged and alerted
    (``costs.unpriced_alerts``), so that it is seen, not summed as zero."""
    entry, created = LedgerEntry.objects.get_or_create(
        event=spend.event,
        defaults={
            "project_id": spend.project_id,
            "model_version_id": spend.model_version_id,
            "training_job_id": spend.training_job_id,
            "endpoint_id": spend.endpoint_id,
            "eval_run_id": spend.eval_run_id,
            "kind": spend.kind,
            "quantity": spend.quantity,
            "unit": spend.unit,
            "price": spend.price,
            "price_per": spend.price_per,
            "price_source": spend.price_source,
            "amount": spend.amount,
            "origin": spend.origin,
            "occurred_at": spend.occurred_at,
        },
    )
    if not created:
        return entry
    _ledger_day_add(entry)
    if entry.amount is None:
        unpriced_alert_on_commit(entry)
        logger.warning(
            "Unpriced spend in project %s: %s %s of %s (%s).",
            spend.project_id,
            spend.quantity,
            spend.unit,
            spend.kind,
            spend.price_source,
        )
    return entry


def ledger_day(moment: dt.datetime) -> dt.date:
    """The day (UTC) a spend at ``moment`` is summed under."""
    return moment.astimezone(dt.UTC).date()


def _ledger_day_add(entry: LedgerEntry) -> None:
    # One statement that adds to the day's row or creates it: two writers adding to the same
    # day at once (the gateway's log writer and a training worker) each add their own, where
    # a read-then-write would lose one of them. SQLite and Postgres both speak this form.
    table = LedgerDay._meta.db_table
    amount = entry.amount
    values: list[int | str | dt.date | Decimal] = [
        entry.project_id,
        ledger_day(entry.occurred_at),
        entry.kind,
        entry.model_version_id or 0,
        amount if amount is not None else Decimal(0),
        1,
        0 if amount is not None else 1,
        entry.quantity if entry.unit == SpendUnit.TOKENS else Decimal(0),
        entry.quantity if entry.unit == SpendUnit.COMPUTE_SECONDS else Decimal(0),
    ]
    sums = ("amount", "entries", "unpriced_entries", "tokens", "compute_seconds")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (project_id, day, kind, model_version_key, amount, entries, "
            "unpriced_entries, tokens, compute_seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "%s) ON CONFLICT (project_id, day, kind, model_version_key) DO UPDATE SET "
            + ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in sums),
            values,
        )


def ledger_spent(query: SpentQuery) -> Decimal | None:
    """The sum of the ledger rows ``query`` names; None without rows or with an unpriced one
    (``ftportal.spending.ledger_spent``)."""
    rows = LedgerEntry.objects.all()
    if query.training_job_id is not None:
        rows = rows.filter(training_job_id=query.training_job_id)
    if query.eval_run_id is not None:
        rows = rows.filter(eval_run_id=query.eval_run_id)
    if query.kind is not None:
        rows = rows.filter(kind=query.kind)
    sums = rows.aggregate(
        spent=Sum("amount"), rows=Count("id"), unpriced=Count("id", filter=Q(amount__isnull=True))
    )
    if not sums["rows"] or sums["unpriced"]:
        return None
    return sums["spent"]
