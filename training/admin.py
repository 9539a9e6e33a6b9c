from django.contrib import admin

from .models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """The base-model catalog, including when each model retires."""

    list_display = ["key", "display_name", "provider", "parameter_count", "retires_at", "is_active"]
    list_filter = ["provider", "is_active"]
