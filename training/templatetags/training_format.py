"""Hyperparameters on pages, one way everywhere (launch form, job page, registry)."""

from __future__ import annotations

from typing import Any

from django import template

from training.hyperparameters import HOSTED_PROVIDERS, hyperparameter_rows

register = template.Library()


@register.filter
def hyperparameters_for(values: dict[str, Any], provider: str) -> list[tuple[str, str]]:
    """``{% for label, text in job.hyperparameters|hyperparameters_for:job.provider %}``"""
    return hyperparameter_rows(values or {}, hosted=provider in HOSTED_PROVIDERS)
