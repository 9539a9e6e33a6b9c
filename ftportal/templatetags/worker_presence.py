"""Whether a worker is there for the work a page waits on: the one warning every such page
shows (templates/ftportal/worker_warning.html), and how long a job's worker has been silent."""

from __future__ import annotations

import datetime

from django import template
from django.conf import settings

from ftportal.selectors import heartbeat_silence as silence_of
from ftportal.selectors import queue_attendance, queue_for_task

register = template.Library()


@register.inclusion_tag("ftportal/worker_warning.html")
def queue_warning(task_name: str, waiting: str = "work sent there") -> dict[str, object]:
    """A warning when no worker listens on the queue ``task_name`` is routed to; ``waiting``
    names what will wait ("this job")."""
    return {"attendance": queue_attendance(queue_for_task(task_name)), "waiting": waiting}


@register.simple_tag
def heartbeat_silence(last_seen: datetime.datetime | None, polled: bool = False) -> int | None:
    """Seconds since the worker of a running job or evaluation last wrote its heartbeat, when
    it is late; None while it is on time. ``polled``: the heartbeat is a hosted job's last
    poll, which comes less often."""
    stale_after = (
        settings.FTPORTAL_HOSTED_POLL_STALE_SECONDS
        if polled
        else settings.FTPORTAL_HEARTBEAT_STALE_SECONDS
    )
    return silence_of(last_seen, stale_after=stale_after)
