"""The serving app: above evaluation in the layers, the production half of the loop."""

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
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
    from .plans import serving_plans_changed

    # Once committed: forgotten before, a request could read the old row again and keep it.
    transaction.on_commit(serving_plans_changed)


# What admits a gateway request (serving.admission keeps admitted keys a moment): a change to
# a key (a revocation, a new limit) or to a project (its name is in the model names) must be
# seen by every gateway process at its next request.
ADMISSION_MODELS = ("serving.ApplicationKey", "ftportal.Project")


def _announce_key_change(**_: Any) -> None:
    from .admission import keys_changed

    # Once committed: announced before, a gateway could read the old row under the new token.
    transaction.on_commit(keys_changed)


def _forget_plans_on_setting(*, setting: str, **_: Any) -> None:
    from .plans import serving_plans_forget

    # A plan holds the backend chats it looked up, built from the gateway's settings (the
    # vLLM endpoint, the local model server): a process restarts for new settings, a test
    # changes them in place.
    if setting.startswith("FTPORTAL_GATEWAY_"):
        serving_plans_forget()


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
        setting_changed.connect(_forget_plans_on_setting, dispatch_uid="serving-settings")
        for label in ADMISSION_MODELS:
            model = apps.get_model(label)
            post_save.connect(
                _announce_key_change, sender=model, dispatch_uid=f"serving-keys-{label}"
            )
            post_delete.connect(
                _announce_key_change, sender=model, dispatch_uid=f"serving-keys-{label}-delete"
            )
