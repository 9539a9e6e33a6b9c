"""The ASGI entry point: the gateway's server runs it (``uvicorn config.asgi:application``,
``make gateway``), for the async views of /v1/ and their streams; the site's pages are served
by WSGI (config.wsgi) as before, though this serves them too."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
