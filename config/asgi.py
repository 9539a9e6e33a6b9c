"""The ASGI entry point: the gateway's server runs it (``uvicorn config.asgi:application``,
``make gateway``), for the async views of /v1/ and their streams; the site's pages are served
by WSGI (config.wsgi) as before, though this serves them too.

Django answers HTTP; this answers the server's lifespan events, so that a clean stop writes
the request log's queued rows (``serving.request_log``) before the process ends. An exit hook
is not enough: uvicorn stops on SIGTERM by raising that signal again once it has shut down, and
a process ended by a signal runs no exit hooks (bench/gateway.py lost the last batch so).
"""

import os
from typing import Any

from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

Message = dict[str, Any]


async def _lifespan(receive: Any, send: Any) -> None:
    from serving.request_log import request_log_close

    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # After the server has answered its last request: everything is queued by now.
            await sync_to_async(request_log_close, thread_sensitive=False)()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Message, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)
