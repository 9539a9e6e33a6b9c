"""Reads for the registry."""

from __future__ import annotations

from django.db.models import QuerySet

from ftportal.models import Project

from .models import PRODUCTION_ALIAS, Alias, AliasChange, ModelVersion, RegisteredModel


def production_version(registered_model: RegisteredModel) -> ModelVersion | None:
    alias = (
        Alias.objects.filter(registered_model=registered_model, name=PRODUCTION_ALIAS)
        .select_related("model_version")
        .first()
    )
    return alias.model_version if alias else None


def versions_with_lineage(registered_model: RegisteredModel) -> QuerySet[ModelVersion]:
    return registered_model.versions.select_related(
        "dataset_version__dataset", "base_model", "training_job__created_by"
    )


def alias_history(project: Project) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(registered_model__project=project).select_related(
        "registered_model", "from_version", "to_version", "changed_by"
    )
