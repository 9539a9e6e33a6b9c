"""The Django admin of monitoring: site admins register the webhooks projects may post alerts
to (a project's leads then pick one by name and never see or type its URL)."""

from __future__ import annotations

from django.contrib import admin

from .models import WebhookDestination


@admin.register(WebhookDestination)
class WebhookDestinationAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "created_at")
    search_fields = ("name",)
