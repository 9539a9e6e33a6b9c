"""Scheduled work of the ledger (celery beat): the daily refresh of token prices, the daily
reconciliation with the providers' own cost reports, and the local model server's machine time
every few minutes."""

from celery import shared_task

from .local_serving import local_serving_time_record
from .prices import prices_import
from .reconciliation import DEFAULT_DAYS, provider_costs_reconcile


@shared_task
def prices_refresh() -> int:
    """Import the installed price table; the number of prices added."""
    return prices_import().added


@shared_task
def provider_costs_reconcile_daily() -> int:
    """Reconcile the last DEFAULT_DAYS days of every endpoint with a cost report; the number
    of days flagged. No retries: a report that could not be read is logged, and the next
    day's run checks the same days again."""
    return sum(done.flagged for done in provider_costs_reconcile(days=DEFAULT_DAYS))


@shared_task
def local_serving_time_record_task() -> int:
    """Record the local model server's machine time since the last reading; the spends
    recorded (``costs.local_serving``)."""
    return local_serving_time_record()
