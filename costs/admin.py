"""The ledger in /admin/: read only (rows are append-only)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import LedgerEntry, Price, PriceOrigin


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


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """Prices are dated rows: a manual override is a new row (origin manual), never an edit."""

    list_display = [
        "model",
        "input_usd_per_million_tokens",
        "output_usd_per_million_tokens",
        "origin",
        "effective_from",
        "source",
    ]
    list_filter = ["origin", "provider"]
    search_fields = ["model", "source"]
    # What an override says; it is always manual, and made by whoever adds it.
    fields = [
        "model",
        "provider",
        "input_usd_per_million_tokens",
        "output_usd_per_million_tokens",
        "source",
        "effective_from",
    ]

    def save_model(self, request: HttpRequest, obj: Price, form: Any, change: bool) -> None:
        obj.origin = PriceOrigin.MANUAL
        obj.created_by = request.user if request.user.is_authenticated else None
        super().save_model(request, obj, form, change)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
