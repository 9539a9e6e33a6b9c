"""Reads about projects: their members and the audit log."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from .models import AuditEntry, Membership, Project


def project_members(project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )


def project_member(project: Project, user_id: int) -> Membership:
    """One member of the project by user id; 404 for anyone else."""
    return get_object_or_404(
        Membership.objects.select_related("user", "project"), project=project, user_id=user_id
    )


def audit_entries(project: Project) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(project=project).select_related("actor", "member")
