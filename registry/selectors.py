"""Reads for the registry."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from ftportal.models import Project
from training.selectors import artifact_name as adapter_name

from .models import PRODUCTION_ALIAS, Alias, AliasChange, ModelVersion, RegisteredModel


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


def versions_with_lineage(registered_model: RegisteredModel) -> QuerySet[ModelVersion]:
    return registered_model.versions.select_related(
        "dataset_version__dataset", "base_model", "training_job__created_by", "checkpoint"
    )


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
