from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .errors import ApplicationError

ERROR_HEADINGS = {403: "Not allowed", 409: "Not possible right now"}


class ApplicationErrorPageMiddleware:
    """Pages show an ApplicationError as a page with its message and status.

    The API maps the same errors in ftportal.api_errors; DRF handles those before this runs.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, ApplicationError):
            return None
        # An HTMX request swaps the answer into part of a page, so it gets the message alone.
        template = "error.html#error-message" if getattr(request, "htmx", False) else "error.html"
        context = {
            "message": exception.message,
            "status": exception.status_code,
            "heading": ERROR_HEADINGS.get(exception.status_code, "Cannot do that"),
        }
        return render(request, template, context, status=exception.status_code)
