"""The site's own middleware. Each one works in a sync (WSGI) and an async (ASGI) chain alike:
one sync-only middleware makes Django run the whole chain of every ASGI request (the gateway's
/v1/) in a new thread of its own, with a hop back to the event loop for the async view, which
cost the gateway most of its throughput (bench/gateway.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin
from whitenoise.middleware import WhiteNoiseMiddleware

from .errors import ApplicationError

ERROR_HEADINGS = {403: "Not allowed", 409: "Not possible right now"}


class ApplicationErrorPageMiddleware(MiddlewareMixin):
    """Pages show an ApplicationError as a page with its message and status.

    The API maps the same errors in ftportal.api_errors; DRF handles those before this runs.
    """

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


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise (the static files, from STATIC_ROOT when DEBUG is off), async-capable: in an
    async chain a request that is no static file goes straight on, without a thread; a static
    file is found (DEBUG: on disk) and opened in a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any], **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    def _may_be_static(self, path: str) -> bool:
        return path.startswith(self.static_prefix) or any(
            path.startswith(prefix) for _, prefix in self.directories
        )

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if self.autorefresh:
            found = await sync_to_async(self.find_file)(path) if self._may_be_static(path) else None
        else:
            found = self.files.get(path)
        if found is not None:
            return await sync_to_async(self.serve)(found, request)
        response: Awaitable[HttpResponseBase] = self.get_response(request)
        return await response
