from django.contrib import admin

from .models import Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Only admins name a secret and where it may be sent; the model's clean() refuses a URL
    outside FTPORTAL_ENDPOINT_HOSTS or a variable outside FTPORTAL_SECRET_ENVS."""

    list_display = ["name", "kind", "base_url", "secret_env", "enabled", "updated_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]
