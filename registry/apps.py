from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"

    def ready(self) -> None:
        # Training (a lower layer) hands each succeeded job to the registry, and asks it which
        # versions lose their base model, through this hook; see training.hooks.
        from training.hooks import register_model_version_keeper

        from .keeper import RegistryKeeper

        register_model_version_keeper(RegistryKeeper())
