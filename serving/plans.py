"""What a model name serves now, in full, kept a moment per gateway process: the version it
resolves to (``serving.model_names``), the experiment running on its alias with its arms
(``serving.experiments``) and its alias's enabled fallback route (``serving.fallbacks``).

Every request needs all three, and reading them costs several queries; the gateway's overhead
is mostly its CPU time per request (bench/gateway.py). So a plan is kept for
FTPORTAL_GATEWAY_NAME_TTL_SECONDS (1 s): a promotion, a rollback, an experiment started or
stopped, or a route changed elsewhere is served within that long, and at once in the process
that made it, whose commit forgets every kept plan (``serving.apps``). Only names that serve
something are kept; refusals are resolved (and explained) anew each time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from django.conf import settings

from ftportal.models import Project
from providers.base import ChatModel

from .experiments import running_experiment
from .fallbacks import fallback_route_of
from .model_names import Resolution, model_name_resolution
from .models import Experiment, FallbackRoute

# Past this many kept names (a client sending made-up names), all are forgotten at once.
MAX_KEPT_NAMES = 10_000


@dataclass(frozen=True)
class ServingPlan:
    """A name's resolution, and, when it goes through an alias, the experiment running there
    (its arms prefetched) and the alias's enabled fallback route.

    ``chats`` holds the backend chats the gateway has looked up for this plan, by ("version",
    id) or ("base", id): looking one up may read rows (``serving.backends``), so it is done
    in a thread once per plan, and the plan's later requests find it here on the event loop.
    """

    resolution: Resolution
    experiment: Experiment | None = None
    route: FallbackRoute | None = None
    chats: dict[tuple[str, int], ChatModel] = field(default_factory=dict, compare=False)


def serving_plan_read(*, project: Project, name: str) -> ServingPlan:
    """The plan as the rows say now (UnknownModelName / OtherProjectModelName as
    :func:`serving.model_names.model_name_resolution`)."""
    resolution = model_name_resolution(project=project, name=name)
    alias = resolution.alias
    if alias is None:  # a pinned name: no experiment splits it, no route backs it
        return ServingPlan(resolution)
    experiment = running_experiment(registered_model_id=alias.registered_model_id, alias=alias.name)
    return ServingPlan(resolution, experiment, fallback_route_of(alias))


_kept: dict[tuple[int, str, str], tuple[float, ServingPlan]] = {}
_kept_lock = threading.Lock()
# Counts the forgets: a plan read before one is not kept after it (it may be stale).
_forgotten = 0


def _kept_key(project: Project, name: str) -> tuple[int, str, str]:
    # The project's name is part of the key: a renamed project's old names stop at once.
    return (project.pk, project.name, name)


def serving_plan_kept(
    *, project: Project, name: str, now: float | None = None
) -> ServingPlan | None:
    """The plan kept for ``name``, when there is one still fresh; None otherwise. Reads no
    rows, so the gateway calls it on its event loop, and :func:`serving_plan` in a thread only
    when this has none."""
    moment = time.monotonic() if now is None else now
    kept = _kept.get(_kept_key(project, name))
    if kept is not None and kept[0] > moment:
        return kept[1]
    return None


def serving_plan(*, project: Project, name: str, now: float | None = None) -> ServingPlan:
    """:func:`serving_plan_read`, kept per process for FTPORTAL_GATEWAY_NAME_TTL_SECONDS
    (``now``: ``time.monotonic()`` by default; 0 keeps nothing)."""
    ttl = float(settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS)
    if ttl <= 0:
        return serving_plan_read(project=project, name=name)
    moment = time.monotonic() if now is None else now
    kept = serving_plan_kept(project=project, name=name, now=moment)
    if kept is not None:
        return kept
    with _kept_lock:
        forgets_before = _forgotten
    plan = serving_plan_read(project=project, name=name)
    with _kept_lock:
        if _forgotten == forgets_before:
            if len(_kept) >= MAX_KEPT_NAMES:
                _kept.clear()
            _kept[_kept_key(project, name)] = (moment + ttl, plan)
    return plan


def serving_plans_generation() -> int:
    """How many times the kept plans were forgotten: a read started before a change is not
    the read a request after it may wait for (``serving.gateway`` reads each plan once)."""
    return _forgotten


def serving_plans_forget() -> None:
    """Forget every kept plan (after a change to what names serve, and in tests)."""
    global _forgotten
    with _kept_lock:
        _kept.clear()
        _forgotten += 1
