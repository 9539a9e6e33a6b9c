import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ftportal.settings")

app = Celery("ftportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The worker process's presence reporter (ftportal.heartbeat), between ready and shutdown.
_presence: dict[str, Any] = {}


@worker_ready.connect
def _start_reporting_presence(sender: Any, **kwargs: Any) -> None:
    # Imported here: the models load only once Django is set up, after this module.
    from .heartbeat import WorkerPresenceReporter

    reporter = WorkerPresenceReporter(sender)
    reporter.start()
    _presence["reporter"] = reporter


@worker_shutdown.connect
def _stop_reporting_presence(sender: Any, **kwargs: Any) -> None:
    reporter = _presence.pop("reporter", None)
    if reporter is not None:
        reporter.stop()
