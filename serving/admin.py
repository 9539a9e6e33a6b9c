"""Application keys in /admin/: who holds which, and a way to revoke them; keys are made only
in their project (page or API), and the admin never sees a secret (only its hash is stored)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ftportal.http import AppRequest

from .models import ApplicationKey
from .services import application_key_revoke


@admin.register(ApplicationKey)
class ApplicationKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "project", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["project", "revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "project",
        "name",
        "prefix",
        "rate_limit_per_minute",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]
    exclude = ["secret_sha256"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Revoke the selected keys", permissions=["delete"])
    def revoke(self, request: AppRequest, queryset: QuerySet[ApplicationKey]) -> None:
        for key in queryset:
            application_key_revoke(key=key, user=request.user)
