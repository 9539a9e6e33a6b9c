"""Dataset numbers in templates, worded one way on every page."""

from __future__ import annotations

from django import template

from datasets.quality.stats import tokens_per_epoch_text

register = template.Library()


@register.filter
def tokens_per_epoch(value: int) -> str:
    """``{{ n|tokens_per_epoch }}``: "14,976 tokens per epoch (training split, prompt and
    answer)", the same words on the readiness report, the launch estimate and the job page."""
    return tokens_per_epoch_text(int(value))


@register.filter
def percent(value: float | None) -> str:
    """``{{ share|percent }}``: a fraction as a percentage with one decimal, "17.2 %"."""
    return "–" if value is None else f"{float(value) * 100:.1f} %"
