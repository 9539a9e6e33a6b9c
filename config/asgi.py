"""The ASGI entry point: the gateway's server runs it (``uvicorn config.asgi:application``,
``make gateway``), for the async views of /v1/ and their streams; the site's pages are served
by WSGI (config.wsgi) as before, though this serves them too.

POST /v1/chat/completions, the path applications call for every answer, is a plain ASGI
application (``serving.gateway.chat_completions``): Django's request cycle was most of what the
gateway added to a request (bench/gateway.py). The gateway's other paths (/v1/) go through a
handler of their own whose middleware is
GATEWAY_MIDDLEWARE only: an application key is their one authentication, so the site's
sessions, CSRF, sign-in lockout, messages, htmx and page headers have nothing to do there,
and running them was a fifth of a gateway request's time (bench/gateway.py).

Django answers HTTP; this answers the server's lifespan events, so that a clean stop writes
the request log's queued rows (``serving.request_log``) before the process ends. An exit hook
is not enough: uvicorn stops on SIGTERM by raising that signal again once it has shut down, and
a process ended by a signal runs no exit hooks (bench/gateway.py lost the last batch so).
"""

import os
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.urls import get_resolver

from ftportal.collector import long_lived_objects_frozen

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

GATEWAY_PREFIX = "/v1/"
# HTTPS redirect and HSTS as on the site (SECURE_* settings); nothing else applies to a key.
GATEWAY_MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]


class GatewayASGIHandler(ASGIHandler):
    """Django's ASGI handler with GATEWAY_MIDDLEWARE instead of the site's MIDDLEWARE (the
    same URLs and views)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE alone: set for this one build (at
        # import, before any request), then put back.
        site_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = GATEWAY_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_middleware


gateway_application = GatewayASGIHandler()

# The gateway's hot path answers as a plain ASGI application, without Django's request cycle
# (serving.gateway.chat_completions says why); imported once Django is set up, as is catalog.
from catalog.adapters import hosted_chat_modules_import, hosted_connections_close  # noqa: E402
from serving.gateway import chat_completions  # noqa: E402

CHAT_COMPLETIONS_PATH = GATEWAY_PREFIX + "chat/completions"

Message = dict[str, Any]


def _request_modules_import() -> None:
    """Import what requests use before the server starts: the URLconf with the views it names,
    and the hosted chats' modules. Left to the first requests, some 4,000 modules (the
    providers' SDKs, the site's views) came in while traffic was served, and each of the full
    collections that followed walked 60,000 objects or more, 20 to 70 ms in which that worker
    answered nothing (bench/gateway.py's p99)."""
    get_resolver().url_patterns  # noqa: B018 (the property imports them)
    hosted_chat_modules_import()


async def _lifespan(receive: Any, send: Any) -> None:
    from serving.request_log import request_log_close

    _request_modules_import()
    # The server's whole life, from startup to shutdown, runs inside this coroutine.
    with long_lived_objects_frozen():
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # After the server has answered its last request: everything is queued by now.
                await sync_to_async(request_log_close, thread_sensitive=False)()
                await hosted_connections_close()  # the backends' connections, on their loop
                await send({"type": "lifespan.shutdown.complete"})
                return


async def application(scope: Message, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] == CHAT_COMPLETIONS_PATH:
        await chat_completions(scope, receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
        await gateway_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
