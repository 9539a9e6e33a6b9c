"""The registry's side of training's hook (``training.hooks``): a succeeded job becomes a model
version with its lineage, and the training pages learn which versions lose their base model.
Registered by ``RegistryConfig.ready`` (training is a lower layer and cannot import this)."""

from __future__ import annotations

import datetime

from ftportal.models import Project
from training.hooks import TrainedModel

from .selectors import EndangeredVersion, versions_losing_their_base
from .services import model_version_register


class RegistryKeeper:
    """training.hooks.ModelVersionKeeper, kept in this app's models."""

    def job_succeeded(self, trained: TrainedModel) -> None:
        model_version_register(
            job=trained.job,
            checkpoint=trained.checkpoint,
            adapter_dir=trained.adapter_dir,
            fine_tuned_model=trained.fine_tuned_model,
            train_loss=trained.train_loss,
            val_loss=trained.val_loss,
        )

    def versions_losing_their_base(
        self, project: Project, *, today: datetime.date
    ) -> list[EndangeredVersion]:
        return versions_losing_their_base(project, today=today)
