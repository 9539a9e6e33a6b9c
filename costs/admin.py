"""The ledger in /admin/: read only (rows are append-only)."""

from django.contrib import admin
from django.http import HttpRequest

from .models import LedgerEntry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "project", "kind", "quantity", "unit", "amount", "origin"]
    list_filter = ["kind", "project"]
    search_fields = ["origin", "event", "price_source"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
