"""Training recipes: the defaults a local job starts from, chosen for the task the dataset
version's answer contract describes.

A lead's own settings always win; a recipe only fills in what the lead leaves empty. The
general recipe is providers.base.TrainingConfig's defaults. Short label answers (a label-set
contract) get their own, measured on a many-label task (bench/classification.py: 60 intents,
ten examples each): see LABEL_SET_RECIPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog.models import BaseModel
from datasets.contracts import LABEL_SET
from datasets.models import DatasetVersion
from ftportal.errors import ApplicationError

from .hyperparameters import HOSTED_PROVIDERS, config_for

# peft's names for every linear layer of a Llama-style decoder block.
ALL_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    key: str
    name: str
    why: str  # one sentence the launch page shows
    defaults: dict[str, Any] = field(default_factory=dict)


GENERAL_RECIPE = Recipe(
    key="general",
    name="General",
    why="The guide's defaults: 3 epochs, LoRA on the attention layers.",
)
LABEL_SET_RECIPE = Recipe(
    key="label_set",
    name="Short labels",
    # bench/classification.py, 60 labels, ten examples each, 300 held-out test messages, the
    # same machine and run settings: 82.3 % label accuracy constrained (86.0 % ranking the
    # labels) against 66.3 % (77.3 %) for the general recipe, in 18.0 against 16.1 minutes.
    why=(
        "The answer is one label of a set: LoRA on every linear layer at rank 16, which "
        "learned 60 labels from ten examples each 16 points better than the general recipe "
        "(bench/classification.py)."
    ),
    defaults={
        "target_modules": list(ALL_LINEAR_LAYERS),
        "lora_r": 16,
        "lora_alpha": 32,
        "learning_rate": 5e-4,
        "epochs": 3,
        # Validation passes say what share of labels the model gets right, the figure the
        # lead is shown, and early stopping and a search keep the best by it.
        "validation_metric": "label_accuracy",
    },
)


def recipe_for(version: DatasetVersion, base_model: BaseModel) -> Recipe:
    """The recipe of a local job on ``version``; hosted providers choose their own."""
    if base_model.provider in HOSTED_PROVIDERS:
        return GENERAL_RECIPE
    if (version.answer_contract or {}).get("kind") == LABEL_SET:
        return LABEL_SET_RECIPE
    return GENERAL_RECIPE


def job_hyperparameters(
    version: DatasetVersion, base_model: BaseModel, raw: dict[str, Any]
) -> dict[str, Any]:
    """The complete, checked hyperparameters of a job: the lead's, then the recipe's, then the
    provider's defaults. The one way launches, estimates and the form fill them in."""
    given = {name: value for name, value in raw.items() if value is not None and value != ""}
    stored = config_for(base_model.provider, recipe_for(version, base_model).defaults | given)
    is_label_set = (version.answer_contract or {}).get("kind") == LABEL_SET
    if stored.get("validation_metric") == "label_accuracy" and not is_label_set:
        field = "hyperparameters.validation_metric"
        raise ApplicationError(
            f"{field}: label accuracy needs a label-set answer contract, and {version} has "
            "none; validate on the loss.",
            extra={"field": field},
        )
    return stored
