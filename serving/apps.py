"""The serving app: above evaluation in the layers, the production half of the loop."""

from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
