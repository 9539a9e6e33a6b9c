from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import BaseModel, Endpoint


def enabled_endpoints() -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(enabled=True).order_by("name")


def endpoint_named(name: str) -> Endpoint | None:
    return Endpoint.objects.filter(name=name.strip()).first()


def base_model_by_key(key: str) -> BaseModel | None:
    """The catalog row a job, an analysis or a candidate names, or None for an unknown key."""
    return BaseModel.objects.filter(key=key).first()


def active_base_models() -> QuerySet[BaseModel]:
    """The base models the catalog offers now: active and not past their retirement."""
    today = timezone.now().date()
    return (
        BaseModel.objects.filter(is_active=True)
        .filter(Q(retires_at__isnull=True) | Q(retires_at__gt=today))
        .order_by("key")
    )
