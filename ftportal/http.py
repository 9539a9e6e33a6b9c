from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AppRequest(HttpRequest):
    """A page request as our middleware leaves it; every page view also requires a login."""

    user: User
    htmx: HtmxDetails
