"""The serving app: above evaluation in the layers, the production half of the loop."""

from typing import Any

from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete, post_save

# What a model name's serving plan reads (serving.plans): a change to any of these may change
# what it serves.
PLAN_MODELS = (
    "registry.Alias",
    "registry.ModelVersion",
    "registry.RegisteredModel",
    "ftportal.Project",
    "catalog.BaseModel",
    "catalog.Endpoint",
    "serving.Experiment",
    "serving.ExperimentArm",
    "serving.FallbackRoute",
)


def _forget_plans(**_: Any) -> None:
    from .plans import serving_plans_forget

    # Once committed: forgotten before, a request could read the old row again and keep it.
    transaction.on_commit(serving_plans_forget)


class ServingConfig(AppConfig):
    name = "serving"

    def ready(self) -> None:
        from django.apps import apps

        from ftportal.health import health_section_register

        from .experiments import shadow_health
        from .request_log import request_log_health

        # What operators read at /healthz: this process's request log queue.
        health_section_register("request_log", request_log_health)
        # ... and the shadow mirrors it skipped (experiments' shadow arms, when busy).
        health_section_register("shadow", shadow_health)
        # A hook on the lower layers' rows (they may not import serving): the gateway's kept
        # plans (serving.plans) go with any change to them.
        for label in PLAN_MODELS:
            model = apps.get_model(label)
            post_save.connect(_forget_plans, sender=model, dispatch_uid=f"serving-{label}")
            post_delete.connect(_forget_plans, sender=model, dispatch_uid=f"serving-{label}-delete")
