"""The catalog in the Django admin: endpoints (only admins name a secret and where it goes) and
the base models with their prices and lifecycle dates, each date's source recorded."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone

from .models import BaseModel, Endpoint

# The dates an admin enters by hand; changing one records who did, unless they name a source.
LIFECYCLE_DATES = ("deprecated_at", "retires_at", "fine_tuned_inference_ends_at")


def manual_source(user: Any, day: Any) -> str:
    """What ``lifecycle_source`` says of a date an admin entered."""
    return f"manual entry by {user.get_username()}, {day.isoformat()}"


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Only admins name a secret (and the admin key of the cost report) and where it may be
    sent; the model's clean() refuses a URL outside FTPORTAL_ENDPOINT_HOSTS or a variable
    outside FTPORTAL_SECRET_ENVS. ``fine_tuning_ends_at`` is the provider's announced end of
    new fine-tuning jobs there, an admin's dated entry."""

    list_display = [
        "name",
        "kind",
        "base_url",
        "secret_env",
        "cost_report_secret_env",
        "fine_tuning_ends_at",
        "enabled",
        "updated_at",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """The base-model catalog: prices, context, and when each model stops taking jobs, stops
    serving its fine-tuned models or shuts down. The daily lifecycle check
    (``catalog.lifecycle``) sets shutdown dates the provider announces; admins enter the
    others, and the source records who did unless they give one."""

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
        "fine_tuned_inference_ends_at",
        "lifecycle_source",
        "lifecycle_checked_at",
        "is_active",
    ]
    list_filter = ["provider", "is_active"]
    search_fields = ["key", "display_name"]
    readonly_fields = ["lifecycle_checked_at"]

    def save_model(
        self, request: HttpRequest, obj: BaseModel, form: ModelForm, change: bool
    ) -> None:
        changed = set(form.changed_data)
        if changed & set(LIFECYCLE_DATES) and "lifecycle_source" not in changed:
            obj.lifecycle_source = manual_source(request.user, timezone.localdate())
        super().save_model(request, obj, form, change)
