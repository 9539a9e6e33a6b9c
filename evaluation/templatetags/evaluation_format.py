"""Formatting of evaluation numbers in templates, one way everywhere."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def score(value: float | None, points: bool = True) -> str:
    """A metric mean: fractions as percentages with one decimal, other units with three
    significant figures; an en dash when there is no value."""
    if value is None:
        return "–"
    return f"{value * 100:.1f} %" if points else f"{value:.3g}"


@register.filter
def signed_points(value: float | None, points: bool = True) -> str:
    """A difference between two means, with its sign: +12.4 or -3.0 (points), +0.21 (others)."""
    if value is None:
        return "–"
    return f"{value * 100:+.1f}" if points else f"{value:+.3g}"


@register.filter
def p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
