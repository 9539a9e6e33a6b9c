"""Dollar amounts as the costs pages write them."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def usd(value: Decimal | None) -> str:
    """``$1,234.57``; under a dollar with four places (a few requests cost fractions of a
    cent, which two places would show as $0.00); "unpriced" for None, never $0."""
    if value is None:
        return "unpriced"
    sign = "-" if value < 0 else ""
    places = 4 if abs(value) < 1 else 2
    return f"{sign}${abs(value):,.{places}f}"


@register.filter
def usd_or_dash(value: Decimal | None) -> str:
    """:func:`usd` where there is an amount; a dash where nothing was spent or nothing can be
    said (no alternative to weigh), which is not the same as unpriced."""
    return "–" if value is None else usd(value)


@register.filter
def per_million(value: Decimal | None) -> str:
    """A price per million tokens as stored, without trailing zeros ("$0.15"); "unknown"."""
    if value is None:
        return "unknown"
    return f"${value.normalize():f}"
