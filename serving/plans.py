"""What a model name serves now, in full, kept a moment per gateway process: the version it
resolves to (``serving.model_names``), the experiment running on its alias with its arms
(``serving.experiments``) and its alias's enabled fallback route (``serving.fallbacks``).

Every request needs all three, and reading them costs several queries and a thread hop; the
gateway's overhead is mostly its CPU time per request (bench/gateway.py). So a plan is kept:

- With Redis, under the plans' generation token (``serving.generations``), which every
  committed change to what a plan reads replaces (``serving.apps``: a promotion, a rollback, an
  experiment started or stopped, a route changed, in any process). The gateway sees the token
  in the round trip that admits each request, so a change is served from the next request
  on, in every process. A plan is read again after KEPT_PLAN_SECONDS even so: the bound on a
  change Redis lost. Kept for 1 s instead, every name was read again every second in every
  process, and the requests that arrived meanwhile waited for the read (10 to 15 ms under
  bench/gateway.py's load, most of its overhead p99).
- Without Redis (or when the request saw no token), for FTPORTAL_GATEWAY_NAME_TTL_SECONDS
  (1 s): a change made elsewhere is served within that long, and at once in the process that
  made it, whose commit forgets every kept plan.

Only names that serve something are kept; refusals are resolved (and explained) anew each time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from redis.exceptions import RedisError

from ftportal.models import Project
from providers.base import ChatModel

from .experiments import running_experiment
from .fallbacks import fallback_route_of
from .generations import PLANS, generation_replace, generations_read, redis_url
from .model_names import Resolution, model_name_resolution
from .models import Experiment, FallbackRoute

# Past this many kept names (a client sending made-up names), all are forgotten at once.
MAX_KEPT_NAMES = 10_000
# A plan kept under a generation token is read again after this long all the same.
KEPT_PLAN_SECONDS = 60.0


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


@dataclass(frozen=True)
class _KeptPlan:
    plan: ServingPlan
    read_at: float  # time.monotonic()
    # The plans' generation token read before the plan's rows; None without Redis.
    generation: str | None

    def fresh(self, *, generation: str | None, now: float, ttl: float) -> bool:
        """Whether a request that saw the plans' ``generation`` (None: it saw none) may be
        served this plan at ``now``."""
        if self.generation is not None and generation is not None:
            return self.generation == generation and now < self.read_at + KEPT_PLAN_SECONDS
        return now < self.read_at + ttl


_kept: dict[tuple[int, str, str], _KeptPlan] = {}
_kept_lock = threading.Lock()
# Counts the forgets: a plan read before one is not kept after it (it may be stale).
_forgotten = 0


def _kept_key(project: Project, name: str) -> tuple[int, str, str]:
    # The project's name is part of the key: a renamed project's old names stop at once.
    return (project.pk, project.name, name)


def serving_plan_kept(
    *, project: Project, name: str, generation: str | None = None, now: float | None = None
) -> ServingPlan | None:
    """The plan kept for ``name`` that a request which saw the plans' ``generation`` token
    may be served (None: it saw none), when there is one; None otherwise. Reads no rows, so
    the gateway calls it on its event loop, and :func:`serving_plan` in a thread only when
    this has none."""
    moment = time.monotonic() if now is None else now
    kept = _kept.get(_kept_key(project, name))
    ttl = float(settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS)
    if kept is not None and kept.fresh(generation=generation, now=moment, ttl=ttl):
        return kept.plan
    return None


def _generation_now() -> str | None:
    url = redis_url()
    if url is None:
        return None
    try:
        return generations_read(url, PLANS)[0]
    except (RedisError, OSError):
        return None  # kept for the TTL only, as without Redis


def serving_plan(
    *, project: Project, name: str, generation: str | None = None, now: float | None = None
) -> ServingPlan:
    """:func:`serving_plan_read`, kept per process as the module says (``generation``: the
    plans' token the request saw, as :func:`serving_plan_kept`; ``now``: ``time.monotonic()``
    by default). A TTL of 0 keeps nothing."""
    ttl = float(settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS)
    if ttl <= 0:
        return serving_plan_read(project=project, name=name)
    moment = time.monotonic() if now is None else now
    kept = serving_plan_kept(project=project, name=name, generation=generation, now=moment)
    if kept is not None:
        return kept
    with _kept_lock:
        forgets_before = _forgotten
    read_under = _generation_now()  # before the rows: see serving.generations
    plan = serving_plan_read(project=project, name=name)
    with _kept_lock:
        if _forgotten == forgets_before:
            if len(_kept) >= MAX_KEPT_NAMES:
                _kept.clear()
            _kept[_kept_key(project, name)] = _KeptPlan(plan, moment, read_under)
    return plan


def serving_plans_generation() -> int:
    """How many times the kept plans were forgotten in this process: a read started before a
    change is not the read a request after it may wait for (``serving.gateway`` reads each
    plan once)."""
    return _forgotten


def serving_plans_forget() -> None:
    """Forget every plan this process keeps (after a setting changed, and in tests)."""
    global _forgotten
    with _kept_lock:
        _kept.clear()
        _forgotten += 1


def serving_plans_changed() -> None:
    """Announce that something a plan reads changed: this process forgets its plans, and every
    other reads them again at its next request. Call it once the change is committed."""
    serving_plans_forget()
    generation_replace(PLANS, what="what model names serve")
