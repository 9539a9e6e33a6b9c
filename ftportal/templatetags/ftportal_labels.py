"""Human words for codes stored in the database, for templates."""

from __future__ import annotations

from django import template

from ftportal.roles import Role

register = template.Library()


@register.filter
def role_label(code: str) -> str:
    """A member's role as people say it ("ML lead"), whatever the stored code ("ml_lead")."""
    return str(Role(code).label) if code in Role.values else code
