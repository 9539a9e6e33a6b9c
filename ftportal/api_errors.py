"""One API error shape: {"error": {"message": ..., ...details}} for every failure.

DRF views answer through ``exception_handler``, an unexpected exception included (a JSON 500
that names no setting, path or traceback; the traceback goes to the log). Requests under /api/
that never reach a view (an unknown URL, a request Django refuses before routing) get the same
shape from the handlers ``config.urls`` installs, so an API client never has to parse HTML.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from .errors import ApplicationError

logger = logging.getLogger("ftportal.api")

API_PREFIX = "/api/"
SERVER_ERROR_MESSAGE = (
    "Something went wrong on the server; nothing you sent was at fault. The error is logged; "
    "try again, and tell an admin if it persists."
)


def error_body(message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"message": message, **details}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(exc.message, **exc.extra), status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an error DRF knows: a bug. Logged with its traceback, answered in the one shape.
        request = context.get("request")
        logger.error(
            "Internal server error: %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        set_rollback()
        return Response(error_body(SERVER_ERROR_MESSAGE), status=500)
    if isinstance(exc, exceptions.ValidationError):
        body: dict[str, Any] = {"message": "Invalid input.", "fields": response.data}
    elif isinstance(exc, Http404):
        body = {"message": "Not found."}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        body = {"message": str(detail) or "Request failed."}
    response.data = {"error": body}
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("Bad request."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("You may not do this."), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("Not found: no such API endpoint."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(SERVER_ERROR_MESSAGE), status=500)
    return defaults.server_error(request)
