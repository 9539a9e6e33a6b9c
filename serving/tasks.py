"""Celery tasks for serving: thin, they call the services."""

from __future__ import annotations

from celery import shared_task

from .services import request_logs_delete_expired


@shared_task
def delete_expired_request_logs() -> int:
    """Celery beat's retention run (config/settings.py CELERY_BEAT_SCHEDULE)."""
    return request_logs_delete_expired()
