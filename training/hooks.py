"""The seam between training and the model registry above it.

Training sits below the registry in the layers, so it can neither create model versions nor
read them itself. Instead it declares here what it tells the layer above (a job succeeded with
this output) and what its pages ask of it (which versions lose their base model), and the
registry registers the one implementation when Django starts (``RegistryConfig.ready``).

A succeeded job is handed over inside the transaction that marks it succeeded, so the job's
success and its model version commit together or not at all: if recording the version raises,
nothing of the success is kept, the job stays as it was and the task fails (the reaper takes
the silent job from there), as when the runners called the registry themselves.
With nothing registered (the registry not installed), a job still succeeds, no version is
recorded and the catalog page names no endangered versions: training works without the layers
above it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ftportal.models import Project

from .models import Checkpoint, TrainingJob


@dataclass(frozen=True)
class TrainedModel:
    """What a succeeded job produced: a local adapter or a hosted model, with its final losses."""

    job: TrainingJob
    # The checkpoint the model is (a local job's best step); None for a hosted job's final model.
    checkpoint: Checkpoint | None
    adapter_dir: str = ""
    fine_tuned_model: str = ""
    train_loss: float | None = None
    val_loss: float | None = None


class VersionLosingBase(Protocol):
    """A model version whose base model shuts down or stops taking jobs soon, and why."""

    @property
    def version(self) -> object: ...  # shown by its str, as the registry names it

    @property
    def reason(self) -> str: ...


class ModelVersionKeeper(Protocol):
    def job_succeeded(self, trained: TrainedModel) -> None:
        """Called inside the transaction that marks the job succeeded; raising rolls it back."""

    def versions_losing_their_base(
        self, project: Project, *, today: datetime.date
    ) -> Sequence[VersionLosingBase]: ...


class KeepsNothing:
    """What training falls back on when no layer above registered a keeper."""

    def job_succeeded(self, trained: TrainedModel) -> None:
        return None

    def versions_losing_their_base(
        self, project: Project, *, today: datetime.date
    ) -> Sequence[VersionLosingBase]:
        return []


_keeper: ModelVersionKeeper = KeepsNothing()


def register_model_version_keeper(keeper: ModelVersionKeeper) -> None:
    """Called once from the registry app's ready(); a second call replaces the first."""
    global _keeper
    _keeper = keeper


def model_version_keeper() -> ModelVersionKeeper:
    return _keeper
