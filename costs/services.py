"""Writing the ledger: a spend reported through ``ftportal.spending`` becomes one row."""

from __future__ import annotations

import logging

from ftportal.spending import Spend

from .models import LedgerEntry

logger = logging.getLogger(__name__)


def ledger_entry_record(*, spend: Spend) -> LedgerEntry:
    """The ledger row of ``spend``, written once: a spend reported again under the same event
    (a retried task) returns the row already written. An unpriced spend is logged as such, so
    that it is seen, not summed as zero."""
    entry, created = LedgerEntry.objects.get_or_create(
        event=spend.event,
        defaults={
            "project_id": spend.project_id,
            "model_version_id": spend.model_version_id,
            "training_job_id": spend.training_job_id,
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
    if created and entry.amount is None:
        logger.warning(
            "Unpriced spend in project %s: %s %s of %s (%s).",
            spend.project_id,
            spend.quantity,
            spend.unit,
            spend.kind,
            spend.price_source,
        )
    return entry
