"""Scheduled work of the catalog (celery beat): the daily lifecycle check of the base models'
shutdown dates against the providers' own model lists (``catalog.lifecycle``)."""

from celery import shared_task

from .lifecycle import lifecycle_refresh


@shared_task
def lifecycle_refresh_daily() -> int:
    """Read every listed endpoint's model list; the number of shutdown dates set or moved.
    No retries: a list that could not be read is logged, and the next day's run asks again."""
    return sum(len(done.changed) for done in lifecycle_refresh())
