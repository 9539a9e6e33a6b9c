"""Fallback routes at request time: which route a model name has, and what it falls back to.

A route belongs to an alias (``serving.models.FallbackRoute``), so only a name that goes
through an alias has one: ``<project>/<alias>`` and ``<project>/<model>/<alias>``. A pinned
name (``<project>/<model>@<n>``) asks for one version and gets that version's answer or its
error, never another model's.

The gateway (``serving.gateway._answer``) asks the primary within the route's timeout,
counts its failures in ``serving.breaker`` and, when it fails, times out or its breaker is
open, asks the route's target; the request's log row says which (:class:`FallbackUse`).
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.models import BaseModel
from registry.models import Alias, ModelVersion

from .models import FallbackCause, FallbackRoute


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


def fallback_targets(route: FallbackRoute) -> tuple[ModelVersion | None, BaseModel | None]:
    """The route's target: its version or its base model (the other None)."""
    return fallback_target_version(route), fallback_target_base_model(route)


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
