"""Scheduled work of monitoring (celery beat): thin tasks, ids in, services do the work."""

from __future__ import annotations
