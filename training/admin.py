from django.contrib import admin

from .models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """The base-model catalog: prices, context, and when each model stops taking jobs or shuts
    down. Admins keep it current; the launch form warns from these dates."""

    list_display = [
        "key",
        "display_name",
        "provider",
        "endpoint",
        "context_window",
        "training_usd_per_million_tokens",
        "input_usd_per_million_tokens",
        "output_usd_per_million_tokens",
        "deprecated_at",
        "retires_at",
        "is_active",
    ]
    list_filter = ["provider", "is_active"]
    search_fields = ["key", "display_name"]
