"""Hyperparameters as users type them (form fields, JSON) turned into provider configs.

Every error names the field at fault. What is stored on the job is the checked, complete
config as JSON, so a job page shows exactly what trained, defaults included.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from typing import Any

from catalog.models import Provider
from ftportal.errors import ApplicationError
from providers.base import VALIDATION_METRICS, HostedTrainingConfig, TrainingConfig

# Bounds that catch typos without second-guessing the user; the guide says 3 to 5 epochs.
NUMBER_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 50),
    "learning_rate": (1e-6, 1e-2),
    "learning_rate_multiplier": (0.01, 10),
    "batch_size": (1, 256),
    "lora_r": (1, 256),
    "lora_alpha": (1, 512),
    "lora_dropout": (0.0, 0.9),
    "max_seq_len": (32, 32_768),
    "seed": (0, 2**31 - 1),
    "max_steps": (1, 1_000_000),
    "eval_every_steps": (1, 100_000),
    "checkpoint_every_steps": (0, 100_000),
    "early_stopping_patience": (1, 100),
}
FLOAT_FIELDS = frozenset({"learning_rate", "learning_rate_multiplier", "lora_dropout"})
# Module names as peft matches them: a suffix of the module's dotted path.
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
HOSTED_PROVIDERS = frozenset({Provider.OPENAI})
# Filled in by the worker from the dataset version's label set, never typed by a lead.
WORKER_FILLED = frozenset({"validation_labels"})


def _as_number(value: Any) -> float | None:
    # bool is an int to Python, but `"epochs": true` is a client bug, not 1 epoch.
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(name: str, value: Any) -> float | int:
    field = f"hyperparameters.{name}"
    number = _as_number(value)
    if number is None:
        raise ApplicationError(
            f"{field}: expected a number, got {value!r}.", extra={"field": field}
        )
    integer = name not in FLOAT_FIELDS
    if integer and not number.is_integer():
        raise ApplicationError(
            f"{field}: expected a whole number, got {value!r}.", extra={"field": field}
        )
    low, high = NUMBER_BOUNDS[name]
    if not low <= number <= high:
        raise ApplicationError(
            f"{field}: {value} is outside the allowed range {low:g} to {high:g}.",
            extra={"field": field},
        )
    return int(number) if integer else number


def _target_modules(value: Any) -> tuple[str, ...]:
    field = "hyperparameters.target_modules"
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ApplicationError(
            f"{field}: expected module names such as q_proj, v_proj.", extra={"field": field}
        )
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.match(name):
            raise ApplicationError(
                f"{field}: {name!r} is not a module name.", extra={"field": field}
            )
    return tuple(dict.fromkeys(names))  # keeps the order, drops repeats


def _validation_metric(value: Any) -> str:
    field = "hyperparameters.validation_metric"
    if value not in VALIDATION_METRICS:
        raise ApplicationError(
            f"{field}: expected one of {', '.join(VALIDATION_METRICS)}, got {value!r}.",
            extra={"field": field},
        )
    return str(value)


def _checked(raw: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ApplicationError(
            f"Unknown hyperparameter(s): {', '.join(unknown)}; "
            f"this provider takes {', '.join(sorted(allowed))}.",
            extra={"field": f"hyperparameters.{unknown[0]}"},
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or value == "":
            continue
        if name == "target_modules":
            values[name] = _target_modules(value)
        elif name == "validation_metric":
            values[name] = _validation_metric(value)
        else:
            values[name] = _number(name, value)
    return values


def training_config_from(raw: dict[str, Any]) -> TrainingConfig:
    """A local job's config from user input, defaults filled in."""
    allowed = {f.name for f in fields(TrainingConfig)} - WORKER_FILLED
    return TrainingConfig(**_checked(raw, allowed))


def hosted_config_from(raw: dict[str, Any]) -> HostedTrainingConfig:
    """A hosted job's config; batch size and learning-rate multiplier left out mean "auto"."""
    allowed = {f.name for f in fields(HostedTrainingConfig)} - {"suffix"}
    return HostedTrainingConfig(**_checked(raw, allowed))


def config_for(provider: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The complete, checked hyperparameters to store on a job of ``provider``."""
    config = hosted_config_from(raw) if provider in HOSTED_PROVIDERS else training_config_from(raw)
    stored = asdict(config)
    stored.pop("suffix", None)
    for name in WORKER_FILLED:
        stored.pop(name, None)
    if "target_modules" in stored:
        stored["target_modules"] = list(stored["target_modules"])  # JSON has no tuples
    return stored


def local_config(stored: dict[str, Any]) -> TrainingConfig:
    """Back from a job's stored JSON to the provider's config."""
    values = dict(stored)
    if "target_modules" in values:
        values["target_modules"] = tuple(values["target_modules"])
    return TrainingConfig(**values)


def hosted_config(stored: dict[str, Any], *, suffix: str) -> HostedTrainingConfig:
    return HostedTrainingConfig(**stored, suffix=suffix)


# --- how hyperparameters read on pages --------------------------------------------------------

# One label per hyperparameter, for the launch form, the job page and the registry.
HYPERPARAMETER_LABELS = {
    "epochs": "Epochs",
    "learning_rate": "Learning rate",
    "learning_rate_multiplier": "Learning-rate multiplier",
    "batch_size": "Batch size",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "target_modules": "Target modules",
    "max_seq_len": "Max sequence length",
    "seed": "Seed",
    "eval_every_steps": "Validate every N steps",
    "checkpoint_every_steps": "Checkpoint every N steps",
    "early_stopping_patience": "Early stopping",
    "validation_metric": "Validation metric",
    "max_steps": "Max steps",
}
EARLY_STOPPING_OFF = "off"
# What an unset value means: hosted providers choose their own; a local max_steps of None
# trains every epoch.
PROVIDER_CHOOSES = "chosen by the provider"
# The intervals left empty are scaled to the data at launch (providers.base.default_intervals).
UNSET_LOCAL = {
    "early_stopping_patience": EARLY_STOPPING_OFF,
    "max_steps": "no limit",
    "eval_every_steps": "scaled to the data",
    "checkpoint_every_steps": "scaled to the data",
}


def early_stopping_text(patience: int | None) -> str:
    """Early stopping in the words every page uses: "off", or when it stops."""
    if patience is None:
        return EARLY_STOPPING_OFF
    evaluations = "evaluation" if patience == 1 else "evaluations"
    return f"after {patience} {evaluations} without improvement"


def unset_text(name: str, *, hosted: bool) -> str:
    """What leaving ``name`` empty means, as the launch form's placeholder and on job pages."""
    return PROVIDER_CHOOSES if hosted else UNSET_LOCAL.get(name, "default")


# How each validation metric reads on pages.
VALIDATION_METRIC_TEXT = {
    "loss": "loss",
    "label_accuracy": "loss and label accuracy (answers constrained to the label set)",
}


def hyperparameter_text(name: str, value: Any, *, hosted: bool) -> str:
    if name == "early_stopping_patience":
        return early_stopping_text(value)
    if name == "validation_metric":
        return VALIDATION_METRIC_TEXT.get(value, str(value))
    if value is None:
        return unset_text(name, hosted=hosted)
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def hyperparameter_rows(values: dict[str, Any], *, hosted: bool) -> list[tuple[str, str]]:
    """(label, value) pairs of a stored config, as people read them."""
    return [
        (HYPERPARAMETER_LABELS.get(name, name), hyperparameter_text(name, value, hosted=hosted))
        for name, value in values.items()
    ]
