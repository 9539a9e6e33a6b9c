"""Fallback routes at request time: which route a model name has, and the primary backend's
call bounded by the route's timeout.

A route belongs to an alias (``serving.models.FallbackRoute``), so only a name that goes
through an alias has one: ``<project>/<alias>`` and ``<project>/<model>/<alias>``. A pinned
name (``<project>/<model>@<n>``) asks for one version and gets that version's answer or its
error, never another model's.

The gateway (``serving.gateway._answer``) asks the primary through :func:`within_timeout`,
counts its failures in ``serving.breaker`` and, when it fails, times out or its breaker is
open, asks the route's target; the request's log row says which (:class:`FallbackUse`).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections

from catalog.models import BaseModel
from registry.models import Alias, ModelVersion

from .models import FallbackCause, FallbackRoute

Result = TypeVar("Result")

# The primary backends' calls under a route's timeout. A call that outlives its timeout keeps
# its thread until the backend answers or its own client times out
# (FTPORTAL_PROVIDER_TIMEOUT_SECONDS for hosted and vLLM backends; a local generation ends by
# itself); its answer is dropped. The pool is bounded, so stuck calls cannot pile up threads:
# once they fill it, new calls wait in its queue, time out there and are withdrawn, never run.
_primary_threads = ThreadPoolExecutor(
    max_workers=int(settings.FTPORTAL_GATEWAY_THREADS), thread_name_prefix="gateway-primary"
)


class PrimaryTimedOut(Exception):
    """The primary backend did not answer within the route's timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g}s")
        self.seconds = seconds


def within_timeout(seconds: float, work: Callable[[], Result]) -> Result:
    """``work``'s result, or PrimaryTimedOut after ``seconds`` (the work goes on in the
    background and its result is dropped). ``work``'s own exceptions are raised as they are."""

    def run() -> Result:
        try:
            return work()
        finally:
            close_old_connections()  # the pool's thread is no request's: give it back

    future = _primary_threads.submit(run)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        if future.done():
            raise  # work's own TimeoutError, not ours
        future.cancel()  # still queued behind stuck calls: it never starts
        raise PrimaryTimedOut(seconds) from None


@dataclass(frozen=True)
class FallbackUse:
    """Why a request went to its route's target, for its log row."""

    route: FallbackRoute
    cause: FallbackCause
    reason: str


def fallback_route_of(alias: Alias) -> FallbackRoute | None:
    """The alias's enabled route; None when it has none (or it is disabled). The targets are
    not joined here: every alias request reads this (``serving.plans`` keeps it a moment),
    and ``fallback_target_version`` / ``fallback_target_base_model`` read them only when a
    request falls back."""
    return FallbackRoute.objects.filter(enabled=True, alias=alias).first()


def fallback_target_version(route: FallbackRoute) -> ModelVersion | None:
    """The route's target version, with what serving it reads (its name, its backend)."""
    if route.fallback_version_id is None:
        return None
    return ModelVersion.objects.select_related(
        "registered_model__project", "base_model__endpoint"
    ).get(pk=route.fallback_version_id)


def fallback_target_base_model(route: FallbackRoute) -> BaseModel | None:
    """The route's target base model, with its endpoint."""
    if route.fallback_base_model_id is None:
        return None
    return BaseModel.objects.select_related("endpoint").get(pk=route.fallback_base_model_id)
