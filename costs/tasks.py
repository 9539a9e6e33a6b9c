"""Scheduled work of the ledger: the daily refresh of token prices (celery beat)."""

from celery import shared_task

from .prices import prices_import


@shared_task
def prices_refresh() -> int:
    """Import the installed price table; the number of prices added."""
    return prices_import().added
