"""Reads for the registry."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404

from ftportal.models import Project
from training.selectors import artifact_name as adapter_name

from .models import (
    PRODUCTION_ALIAS,
    Alias,
    AliasChange,
    AliasChangeKind,
    ModelVersion,
    RegisteredModel,
)

# Attributes registered_models_of's prefetches put on each model: its production alias rows
# (zero or one) and the promotions that moved production, newest first.
PRODUCTION_ALIASES_ATTR = "production_aliases"
PRODUCTION_PROMOTIONS_ATTR = "production_promotions"


# --- Project-scoped lookups: each entity of the registry, only within the given project ---


def registered_models_of(project: Project) -> QuerySet[RegisteredModel]:
    """The project's models with their versions (and each version's lineage), the production
    alias and the promotions that moved it, in a fixed few queries whatever the number of
    models: the registry page and the API read the same rows."""
    versions = ModelVersion.objects.select_related(
        "dataset_version__dataset", "base_model", "training_job__created_by", "checkpoint"
    ).order_by("-number")
    production = Alias.objects.filter(name=PRODUCTION_ALIAS).select_related("model_version")
    return RegisteredModel.objects.filter(project=project).prefetch_related(
        Prefetch("versions", queryset=versions),
        Prefetch("aliases", queryset=production, to_attr=PRODUCTION_ALIASES_ATTR),
        Prefetch(
            "alias_changes",
            queryset=_production_promotions(),
            to_attr=PRODUCTION_PROMOTIONS_ATTR,
        ),
    )


def registered_model_in_project(project: Project, model_id: int) -> RegisteredModel:
    """One model of the project, loaded as :func:`registered_models_of` loads them; 404 for
    any other id (another project's included, so ids do not leak)."""
    return get_object_or_404(registered_models_of(project), pk=model_id)


def model_versions_of(project: Project) -> QuerySet[ModelVersion]:
    """The project's model versions with their model, base model and lineage."""
    return ModelVersion.objects.filter(registered_model__project=project).select_related(
        "registered_model",
        "base_model",
        "dataset_version__dataset",
        "training_job__created_by",
        "checkpoint",
    )


def model_version_in_project(project: Project, version_id: int) -> ModelVersion:
    """One model version of the project; 404 for any other id."""
    return get_object_or_404(model_versions_of(project), pk=version_id)


# --- Production and rollback ---


def production_version(registered_model: RegisteredModel) -> ModelVersion | None:
    alias = (
        Alias.objects.filter(registered_model=registered_model, name=PRODUCTION_ALIAS)
        .select_related("model_version")
        .first()
    )
    return alias.model_version if alias else None


def artifact_name(version: ModelVersion) -> str:
    """The version's model as people may see it: the hosted model id, or the adapter's path
    inside the artifact store; never a path on the server's disk."""
    return version.fine_tuned_model or adapter_name(version.adapter_dir)


def _production_promotions() -> QuerySet[AliasChange]:
    return (
        AliasChange.objects.filter(alias=PRODUCTION_ALIAS, kind=AliasChangeKind.PROMOTE)
        .select_related("from_version")
        .order_by("-id")
    )


def previous_production(
    production: ModelVersion | None, promotions: Iterable[AliasChange]
) -> ModelVersion | None:
    """Where a rollback goes: the version production pointed at before ``production`` was
    promoted, read from the latest of ``promotions`` (newest first) that moved it there."""
    if production is None:
        return None
    promotion = next((p for p in promotions if p.to_version_id == production.pk), None)
    return promotion.from_version if promotion else None


def production_promotions_of(registered_model: RegisteredModel) -> QuerySet[AliasChange]:
    """The promotions that moved this model's production alias, newest first."""
    return _production_promotions().filter(registered_model=registered_model)


def prefetched_production(registered_model: RegisteredModel) -> ModelVersion | None:
    """What production serves, for a model loaded by :func:`registered_models_of` (no query)."""
    aliases: list[Alias] = getattr(registered_model, PRODUCTION_ALIASES_ATTR, [])
    return aliases[0].model_version if aliases else None


def prefetched_rollback_target(registered_model: RegisteredModel) -> ModelVersion | None:
    """Where a rollback goes (``registry.services.rollback_target``), for a model loaded by
    :func:`registered_models_of` (no query)."""
    promotions: list[AliasChange] = getattr(registered_model, PRODUCTION_PROMOTIONS_ATTR, [])
    return previous_production(prefetched_production(registered_model), promotions)


def alias_history(project: Project) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(registered_model__project=project).select_related(
        "registered_model", "from_version", "to_version", "changed_by"
    )


def alias_changes_of(version: ModelVersion) -> QuerySet[AliasChange]:
    """Every alias move to or away from this version, newest first."""
    return (
        AliasChange.objects.filter(Q(from_version=version) | Q(to_version=version))
        .select_related("from_version", "to_version", "changed_by")
        .order_by("-id")
    )


@dataclass(frozen=True)
class EndangeredVersion:
    version: ModelVersion
    reason: str


def versions_losing_their_base(
    project: Project, *, today: datetime.date, within_days: int = 60
) -> list[EndangeredVersion]:
    """Versions whose base model shuts down (they stop working) or stops taking fine-tuning
    jobs (they cannot be retrained) within ``within_days``, or already has."""
    horizon = today + datetime.timedelta(days=within_days)
    versions = (
        ModelVersion.objects.filter(registered_model__project=project)
        .filter(Q(base_model__retires_at__lte=horizon) | Q(base_model__deprecated_at__lte=horizon))
        .select_related("registered_model", "base_model")
        .order_by("registered_model__name", "-number")
    )
    endangered = []
    for version in versions:
        base = version.base_model
        reasons = []
        if base.retires_at and base.retires_at <= horizon:
            tense = "shut down on" if base.retires_at <= today else "shuts down on"
            reasons.append(
                f"{base.display_name} {tense} {base.retires_at}: this version stops working"
            )
        if base.deprecated_at and base.deprecated_at <= horizon:
            tense = "took" if base.deprecated_at <= today else "takes"
            reasons.append(
                f"{base.display_name} {tense} no new fine-tuning jobs from {base.deprecated_at}: "
                "it cannot be retrained on the same base"
            )
        endangered.append(EndangeredVersion(version=version, reason="; ".join(reasons)))
    return endangered
