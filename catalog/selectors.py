from __future__ import annotations

from django.db.models import QuerySet

from .models import Endpoint


def enabled_endpoints() -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(enabled=True).order_by("name")


def endpoint_named(name: str) -> Endpoint | None:
    return Endpoint.objects.filter(name=name.strip()).first()
