"""The /v1/ URL table's own answers, in OpenAI's error shape rather than Django's pages: 405
(with ``Allow``) for a method a gateway path does not take, and 404 for a path under /v1/ that
is not one of the gateway's. An application's client parses these as it parses any error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from .gateway import GatewayError

View = TypeVar("View", bound=Callable[..., Any])


def allow_methods(view: View, *methods: str) -> View:
    """``view`` for ``methods`` only; any other method gets OpenAI's error JSON with 405."""

    @functools.wraps(view)  # keeps csrf_exempt: only an application key authenticates here
    async def checked(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        if request.method not in methods:
            allowed = ", ".join(methods)
            return GatewayError(
                405,
                f"{request.method} is not allowed on {request.path}; use {allowed}.",
                code="method_not_allowed",
                headers={"Allow": allowed},
            ).response()
        return await view(request, *args, **kwargs)

    return cast(View, checked)


@csrf_exempt
async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Any other path under /v1/."""
    return GatewayError(
        404,
        f"Unknown path {request.path}: the gateway serves GET /v1/models, "
        "POST /v1/chat/completions, POST /v1/feedback and POST /v1/events.",
        code="unknown_url",
    ).response()
