"""One API error shape: {"error": {"message": ..., ...details}} for every failure."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ApplicationError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response({"error": {"message": exc.message, **exc.extra}}, status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body: dict[str, Any] = {"message": "Invalid input.", "fields": response.data}
    elif isinstance(exc, Http404):
        body = {"message": "Not found."}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        body = {"message": str(detail) or "Request failed."}
    response.data = {"error": body}
    return response
