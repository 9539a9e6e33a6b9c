"""Training figures on pages, one way everywhere: hyperparameters (launch form, job page,
registry) and durations (the launch estimate)."""

from __future__ import annotations

from typing import Any

from django import template

from training.hyperparameters import HOSTED_PROVIDERS, hyperparameter_rows

register = template.Library()


@register.filter
def hyperparameters_for(values: dict[str, Any], provider: str) -> list[tuple[str, str]]:
    """``{% for label, text in job.hyperparameters|hyperparameters_for:job.provider %}``"""
    return hyperparameter_rows(values or {}, hosted=provider in HOSTED_PROVIDERS)


@register.filter
def duration(seconds: float | None) -> str:
    """``{{ estimate.time.seconds|duration }}``: "45 s", "12 min", "2 h 5 min"."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
