"""The site: settings, the root URL conf, the Celery app, the WSGI/ASGI entry points and the
demo. It sits above every app and is the only package that imports them all."""

# Loaded with the settings, so that every process (web server included) sends tasks through
# this app and its Django settings.
from .celery import app as celery_app

__all__ = ["celery_app"]
