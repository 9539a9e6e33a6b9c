"""Checkpoints of local training: the run's state (data position, early stopping, counters) as
readable JSON beside the adapter and the tensor state, written whole or not at all, and read
back only into a run that continues the same one."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from providers.base import ProviderError, TrainingConfig

from .encoding import DataPosition

CHECKPOINTS_DIR = "checkpoints"

# --- early stopping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyStopping:
    """The best validation evaluation so far (its loss, its label accuracy when the run
    measures one, its step) and the evaluations since without a better one."""

    best_val_loss: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    best_accuracy: float | None = None

    def after_evaluation(
        self, step: int, val_loss: float, accuracy: float | None = None
    ) -> EarlyStopping:
        if self._improved_by(val_loss, accuracy):
            return EarlyStopping(val_loss, step, 0, accuracy)
        return dataclasses.replace(self, evaluations_since_best=self.evaluations_since_best + 1)

    def _improved_by(self, val_loss: float, accuracy: float | None) -> bool:
        """A higher accuracy is better whatever the loss (it is what the lead is shown); at
        equal accuracy, or with none measured, a lower loss is."""
        if self.best_val_loss is None:
            return True
        best_accuracy = self.best_accuracy
        if accuracy is not None and best_accuracy is not None and accuracy != best_accuracy:
            return accuracy > best_accuracy
        return val_loss < self.best_val_loss

    def patience_exhausted(self, patience: int | None) -> bool:
        return patience is not None and self.evaluations_since_best >= patience


# --- checkpoints --------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 1
TRAINER_STATE_FILE = "trainer_state.json"  # step, data position, losses, config: readable
TENSOR_STATE_FILE = "training_state.pt"  # optimizer, schedule, random number generators
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHECKPOINT_FILES = (*_ADAPTER_FILES, TRAINER_STATE_FILE, TENSOR_STATE_FILE)
# Changing any other field would make a resumed run a different run.
_FIELDS_FREE_ON_RESUME = ("checkpoint_every_steps",)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


@dataclass
class RunState:
    """Everything about a run's progress that is not a tensor; a checkpoint stores it as JSON."""

    step: int
    position: DataPosition
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    stopping: EarlyStopping = EarlyStopping()
    # The training loss of the step with the best validation loss, reported with its adapter.
    best_train_loss: float | None = None
    step_tokens: int = 0  # of the last step
    trained_tokens: int = 0
    # The tokens the model ran for them: fewer where batches ran a shared prefix once.
    computed_tokens: int = 0
    training_seconds: float = 0.0
    evaluations: int = 0
    evaluation_seconds: float = 0.0

    def to_json(self, config: TrainingConfig, fingerprint: str) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["format"] = CHECKPOINT_FORMAT
        record["config"] = _config_record(config)
        record["train_fingerprint"] = fingerprint
        return record

    @staticmethod
    def from_json(record: dict[str, Any]) -> RunState:
        return RunState(
            step=int(record["step"]),
            position=DataPosition(**record["position"]),
            train_loss=record["train_loss"],
            val_loss=record["val_loss"],
            # Checkpoints written before label accuracy was measured have none.
            val_accuracy=record.get("val_accuracy"),
            stopping=EarlyStopping(**record["stopping"]),
            best_train_loss=record["best_train_loss"],
            step_tokens=int(record["step_tokens"]),
            trained_tokens=int(record["trained_tokens"]),
            # Checkpoints written before prefixes were shared ran every token they trained.
            computed_tokens=int(record.get("computed_tokens", record["trained_tokens"])),
            training_seconds=float(record["training_seconds"]),
            evaluations=int(record["evaluations"]),
            evaluation_seconds=float(record["evaluation_seconds"]),
        )


def _config_record(config: TrainingConfig) -> dict[str, Any]:
    # Through JSON and back, so a tuple and the list it was saved as compare equal.
    loaded: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return loaded


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back from disk, checked for everything resuming needs."""

    path: Path
    state: RunState
    config: dict[str, Any]
    train_fingerprint: str
    adapter_weights: dict[str, torch.Tensor]
    tensors: dict[str, Any]


def write_atomically(final_dir: Path, write: Callable[[Path], None]) -> None:
    """Write a directory whole or not at all.

    ``write`` fills a temporary directory beside ``final_dir`` (same file system), whose files
    are flushed to disk before one rename publishes it: a process killed meanwhile leaves a
    hidden temporary directory, never a partial ``final_dir``.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        write(staging)
        _flush_to_disk(staging)
        # mkdtemp makes the directory private (0700); a checkpoint is read like the rest of the
        # output directory, possibly by the web process under another user.
        staging.chmod(0o755)
        if final_dir.exists():
            # The same step written by an earlier attempt of this run (resumed from before it):
            # rename cannot replace a non-empty directory, so move the old one aside first.
            replaced = final_dir.with_name(f".{final_dir.name}.old-{uuid.uuid4().hex}")
            os.replace(final_dir, replaced)
            os.replace(staging, final_dir)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _flush_to_disk(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as written:
                os.fsync(written.fileno())


def remove_unfinished_checkpoints(output_dir: Path) -> None:
    """Delete what a process killed mid-write left (only hidden temporary directories)."""
    for leftover in (output_dir / CHECKPOINTS_DIR).glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint for resuming; ProviderError names the path and what is wrong."""
    problem = f"cannot resume from {path}"
    if not path.is_dir():
        raise ProviderError(f"{problem}: it is not a directory")
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise ProviderError(
            f"{problem}: the checkpoint is incomplete, missing {', '.join(missing)}"
        )
    try:
        record = json.loads((path / TRAINER_STATE_FILE).read_text())
        state = RunState.from_json(record)
        config, fingerprint = dict(record["config"]), str(record["train_fingerprint"])
    except (ValueError, TypeError) as error:
        raise ProviderError(f"{problem}: {TRAINER_STATE_FILE} is unreadable ({error})") from error
    except KeyError as error:
        raise ProviderError(f"{problem}: {TRAINER_STATE_FILE} lacks {error}") from error
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ProviderError(
            f"{problem}: checkpoint format {record.get('format')!r}, "
            f"this version reads {CHECKPOINT_FORMAT}"
        )
    try:
        tensors = torch.load(path / TENSOR_STATE_FILE, map_location="cpu", weights_only=True)
        adapter_weights = load_file(str(path / "adapter_model.safetensors"))
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as error:
        raise ProviderError(f"{problem}: a tensor file is unreadable ({error})") from error
    missing_keys = [key for key in _TENSOR_STATE_KEYS if key not in tensors]
    if missing_keys:
        raise ProviderError(f"{problem}: {TENSOR_STATE_FILE} lacks {', '.join(missing_keys)}")
    return Checkpoint(path, state, config, fingerprint, adapter_weights, tensors)


_TENSOR_STATE_KEYS = ("optimizer", "scheduler", "torch_rng", "cuda_rng", "python_rng")


def check_resumable(checkpoint: Checkpoint, config: TrainingConfig, fingerprint: str) -> None:
    """Refuse to resume a checkpoint into a run that would not continue the same one."""
    saved = {k: v for k, v in checkpoint.config.items() if k not in _FIELDS_FREE_ON_RESUME}
    wanted = {k: v for k, v in _config_record(config).items() if k not in _FIELDS_FREE_ON_RESUME}
    changed = sorted(
        name for name in saved.keys() | wanted.keys() if saved.get(name) != wanted.get(name)
    )
    if changed:
        raise ProviderError(
            f"cannot resume from {checkpoint.path}: it was trained with other settings "
            f"({', '.join(changed)}); resume with the same hyperparameters"
        )
    if checkpoint.train_fingerprint != fingerprint:
        raise ProviderError(
            f"cannot resume from {checkpoint.path}: it was trained on a different training set"
        )
