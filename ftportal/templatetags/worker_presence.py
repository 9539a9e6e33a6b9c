"""Whether a worker is there for the work a page waits on: the one warning every such page
shows (templates/ftportal/worker_warning.html). How long a running job's or evaluation's own
worker has been silent is theirs to say (``worker_silent_seconds``), for pages and API alike."""

from __future__ import annotations

from django import template

from ftportal.selectors import queue_attendance, queue_for_task

register = template.Library()


@register.inclusion_tag("ftportal/worker_warning.html")
def queue_warning(task_name: str, waiting: str = "work sent there") -> dict[str, object]:
    """A warning when no worker listens on the queue ``task_name`` is routed to; ``waiting``
    names what will wait ("this job")."""
    return {"attendance": queue_attendance(queue_for_task(task_name)), "waiting": waiting}
