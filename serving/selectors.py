"""Reads for serving: each application key only within its project."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftportal.models import Project

from .models import ApplicationKey


def application_keys_of(project: Project) -> QuerySet[ApplicationKey]:
    """The project's keys, live and revoked, newest first, with who created and revoked them."""
    return ApplicationKey.objects.filter(project=project).select_related("created_by", "revoked_by")


def application_key_in_project(project: Project, key_id: int) -> ApplicationKey:
    """One key of the project; 404 for any other id (another project's included, so ids do
    not leak)."""
    return get_object_or_404(application_keys_of(project), pk=key_id)


def application_key_with_prefix(prefix: str) -> ApplicationKey | None:
    """The key a presented prefix names, with its project, whatever the project: the gateway
    learns the project from the key (and checks it against the model asked for)."""
    return ApplicationKey.objects.select_related("project").filter(prefix=prefix).first()
