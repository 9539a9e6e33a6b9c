"""Reads every monitor starts from."""

from __future__ import annotations

from django.db.models import QuerySet

from registry.models import PRODUCTION_ALIAS, Alias

from .models import MonitoringSettings


def monitoring_settings_of(project_id: int) -> MonitoringSettings:
    """The project's monitoring settings, with its webhook; the defaults (unsaved) when a lead
    never set them."""
    found = (
        MonitoringSettings.objects.filter(project_id=project_id).select_related("webhook").first()
    )
    return found or MonitoringSettings(project_id=project_id)


def production_aliases() -> QuerySet[Alias]:
    """Every registered model's production alias, with its model and the version it serves
    (that version's base model and endpoint too: the lifecycle countdowns read them)."""
    return (
        Alias.objects.filter(name=PRODUCTION_ALIAS)
        .select_related("registered_model", "model_version__base_model__endpoint")
        .order_by("registered_model__project_id", "registered_model_id")
    )
