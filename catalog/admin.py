from django.contrib import admin

from .models import BaseModel, Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Only admins name a secret (and the admin key of the cost report) and where it may be
    sent; the model's clean() refuses a URL outside FTPORTAL_ENDPOINT_HOSTS or a variable
    outside FTPORTAL_SECRET_ENVS."""

    list_display = [
        "name",
        "kind",
        "base_url",
        "secret_env",
        "cost_report_secret_env",
        "enabled",
        "updated_at",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]


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
