"""The Celery app of the site: its settings are Django's CELERY_* settings, its tasks each
app's tasks.py. Started as ``celery -A config worker`` (or ``beat``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ftportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
