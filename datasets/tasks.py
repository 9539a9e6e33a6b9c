"""Celery tasks of the datasets app: background imports and quality analysis.

Each task takes ids, loads its rows and calls a service; the service owns the work.
"""

from __future__ import annotations
