"""Early stopping and time estimates of local training: the rules alone, then a real run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from providers.base import (
    CheckpointSaved,
    Conversation,
    ProviderError,
    StepPlan,
    TrainingConfig,
    TrainingProgress,
)
from providers.local.checkpoints import EarlyStopping, checkpoint_dir
from providers.local.precision import TrainingSetup
from providers.local.training import LocalLoRAFineTuner, estimate_seconds_left
from providers.local.weights import ensure_base_model

SYSTEM = "Classify the support ticket as billing, bug, feature or account. Answer with one word."
TICKETS = [
    ("I was charged twice this month.", "billing"),
    ("The app crashes when I open settings.", "bug"),
    ("Can you add a dark mode?", "feature"),
    ("How do I reset my password?", "account"),
    ("My invoice shows the wrong VAT number.", "billing"),
    ("Export to CSV gives an empty file.", "bug"),
    ("Please support SSO with Okta.", "feature"),
    ("I cannot log in after changing my email.", "account"),
]
# The two runs whose trajectories the tests below read (a new best, then passes without one)
# were read off fp32 runs whose batches share their prefix (packed rows draw their dropout over
# other shapes and learn along another path). A bf16 run learns the wrong labels too, at other
# steps (tests/providers/test_local_precision.py compares the two precisions).
TRAJECTORY_SETUP = TrainingSetup("fp32", "sdpa")
WRONG_LABEL = {"billing": "feature", "bug": "account", "feature": "billing", "account": "bug"}


def conversation(ticket: str, label: str) -> Conversation:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ticket},
        {"role": "assistant", "content": label},
    ]


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


def evaluate(losses: list[float]) -> EarlyStopping:
    stopping = EarlyStopping()
    for step, loss in enumerate(losses, start=1):
        stopping = stopping.after_evaluation(step, loss)
    return stopping


def test_the_first_evaluation_is_the_best_so_far() -> None:
    assert evaluate([2.0]) == EarlyStopping(best_val_loss=2.0, best_step=1)


def test_a_lower_loss_is_a_new_best_and_resets_the_count() -> None:
    assert evaluate([2.0, 2.5, 1.5]) == EarlyStopping(best_val_loss=1.5, best_step=3)


def test_an_equal_or_higher_loss_counts_as_no_improvement() -> None:
    assert evaluate([2.0, 2.0, 2.1]) == EarlyStopping(2.0, 1, evaluations_since_best=2)


def test_patience_is_exhausted_after_that_many_evaluations_without_a_new_best() -> None:
    assert not evaluate([2.0, 2.1]).patience_exhausted(2)
    assert evaluate([2.0, 2.1, 2.2]).patience_exhausted(2)
    assert not evaluate([2.0, 2.1, 2.2, 1.0]).patience_exhausted(2)
    assert not evaluate([2.0, 3.0, 4.0, 5.0]).patience_exhausted(None)


def evaluate_with_accuracy(figures: list[tuple[float, float]]) -> EarlyStopping:
    stopping = EarlyStopping()
    for step, (loss, accuracy) in enumerate(figures, start=1):
        stopping = stopping.after_evaluation(step, loss, accuracy)
    return stopping


def test_with_label_accuracy_a_higher_accuracy_wins_even_at_a_higher_loss() -> None:
    stopping = evaluate_with_accuracy([(1.0, 0.5), (1.2, 0.75)])
    assert stopping == EarlyStopping(1.2, 2, 0, best_accuracy=0.75)


def test_with_label_accuracy_a_lower_accuracy_is_no_improvement_at_a_lower_loss() -> None:
    stopping = evaluate_with_accuracy([(1.0, 0.75), (0.5, 0.5), (0.4, 0.5)])
    assert stopping == EarlyStopping(1.0, 1, 2, best_accuracy=0.75)
    assert stopping.patience_exhausted(2)


def test_at_equal_label_accuracy_the_lower_loss_wins() -> None:
    assert evaluate_with_accuracy([(1.0, 0.5), (0.9, 0.5)]).best_step == 2
    assert evaluate_with_accuracy([(1.0, 0.5), (1.1, 0.5)]).best_step == 1


def test_evaluations_left_count_every_nth_step_and_the_last() -> None:
    ten, twelve = StepPlan(10, 10, 1), StepPlan(12, 12, 1)
    assert ten.evaluations_after(0, 5) == 2  # 5, 10
    assert twelve.evaluations_after(0, 5) == 3  # 5, 10, 12
    assert twelve.evaluations_after(5, 5) == 2  # 10, 12
    assert twelve.evaluations_after(10, 5) == 1  # 12
    assert twelve.evaluations_after(12, 5) == 0


def test_seconds_left_add_remaining_steps_and_evaluations() -> None:
    assert (
        estimate_seconds_left(
            steps_left=4, seconds_per_step=0.5, evaluations_left=2, seconds_per_evaluation=3.0
        )
        == 8.0
    )


def test_early_stopping_without_validation_data_is_refused_up_front(
    base_model_dir: Path, tmp_path: Path
) -> None:
    events: list[TrainingProgress] = []

    with pytest.raises(ProviderError, match="early stopping watches the validation loss"):
        LocalLoRAFineTuner(base_model_dir).train(
            train=[conversation(ticket, label) for ticket, label in TICKETS],
            validation=[],
            config=TrainingConfig(early_stopping_patience=2),
            output_dir=tmp_path / "job",
            on_progress=events.append,
            should_stop=lambda: False,
        )

    assert events == []
    assert not (tmp_path / "job").exists()


def test_rising_validation_loss_stops_training_and_keeps_the_best_adapter(
    base_model_dir: Path, tmp_path: Path
) -> None:
    """Training on the wrong labels, fast, makes the loss on the right ones rise soon."""
    events: list[TrainingProgress] = []
    saved: list[CheckpointSaved] = []
    patience = 2
    config = TrainingConfig(
        epochs=10,
        batch_size=4,
        learning_rate=1e-2,
        max_steps=12,
        eval_every_steps=1,
        checkpoint_every_steps=100,  # only the best ones and the last
        early_stopping_patience=patience,
    )

    result = LocalLoRAFineTuner(base_model_dir).train(
        train=[conversation(ticket, WRONG_LABEL[label]) for ticket, label in TICKETS],
        validation=[conversation(ticket, label) for ticket, label in TICKETS],
        config=config,
        output_dir=tmp_path / "job",
        on_progress=events.append,
        should_stop=lambda: False,
        on_checkpoint=saved.append,
    )

    val_losses = [event.val_loss for event in events]
    assert all(loss is not None for loss in val_losses)
    best = min(range(len(events)), key=lambda index: val_losses[index] or 0.0)
    assert result.stopped_early
    assert result.steps == len(events) < 12
    assert result.best_step == events[best].step == result.steps - patience
    assert result.val_loss == val_losses[best]
    assert result.train_loss == events[best].train_loss
    assert events[-1].seconds_left == 0.0
    assert saved[-1].step == result.steps  # the last state stays resumable
    assert checkpoint_dir(tmp_path / "job", result.best_step) in [item.path for item in saved]
    kept = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    best_checkpoint = load_file(
        str(checkpoint_dir(tmp_path / "job", result.best_step) / "adapter_model.safetensors")
    )
    last_checkpoint = load_file(str(saved[-1].path / "adapter_model.safetensors"))
    assert all(torch.equal(kept[name], best_checkpoint[name]) for name in kept)
    assert not all(torch.equal(kept[name], last_checkpoint[name]) for name in kept)


LABELS = ("billing", "bug", "feature", "account")


def test_label_accuracy_is_measured_at_each_pass_and_early_stopping_keeps_its_best(
    base_model_dir: Path, tmp_path: Path
) -> None:
    """Trained on the wrong labels, the model answers fewer right labels as it learns them,
    so the best pass by label accuracy comes early and patience ends the run."""
    events: list[TrainingProgress] = []
    config = TrainingConfig(
        epochs=10,
        batch_size=4,
        learning_rate=1e-2,
        max_steps=12,
        eval_every_steps=2,
        checkpoint_every_steps=100,
        early_stopping_patience=1,
        validation_metric="label_accuracy",
        validation_labels=LABELS,
    )

    result = LocalLoRAFineTuner(base_model_dir, setup=TRAJECTORY_SETUP).train(
        train=[conversation(ticket, WRONG_LABEL[label]) for ticket, label in TICKETS],
        validation=[conversation(ticket, label) for ticket, label in TICKETS],
        config=config,
        output_dir=tmp_path / "job",
        on_progress=events.append,
        should_stop=lambda: False,
    )

    passes = [event for event in events if event.val_loss is not None]
    assert [event.step for event in passes] == list(range(2, result.steps + 1, 2))
    accuracies = [event.val_accuracy or 0.0 for event in passes]
    assert all(event.val_accuracy is not None for event in passes)
    assert all(0 <= accuracy <= 1 for accuracy in accuracies)
    assert all(event.val_accuracy is None for event in events if event.val_loss is None)
    # Each accuracy is a share of the 8 validation tickets.
    assert all(round(accuracy * 8) == accuracy * 8 for accuracy in accuracies)
    best = max(passes, key=lambda event: (event.val_accuracy or 0, -(event.val_loss or 0)))
    assert result.best_step == best.step
    assert result.val_accuracy == best.val_accuracy
    assert result.stopped_early and result.steps < 12
    assert result.steps == best.step + 2  # one pass without a better accuracy
    assert min(accuracies) < max(accuracies)  # the wrong labels were learned


def test_label_accuracy_without_the_label_set_is_refused(
    base_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError, match="needs the label set"):
        LocalLoRAFineTuner(base_model_dir).train(
            train=[conversation(ticket, label) for ticket, label in TICKETS],
            validation=[conversation(ticket, label) for ticket, label in TICKETS],
            config=TrainingConfig(validation_metric="label_accuracy"),
            output_dir=tmp_path / "job",
            on_progress=lambda _: None,
            should_stop=lambda: False,
        )


def test_patience_running_out_at_the_last_step_is_not_stopping_early(
    base_model_dir: Path, tmp_path: Path
) -> None:
    """The run keeps its best step, but it did not end any sooner: no "stopped early"."""
    events: list[TrainingProgress] = []
    result = LocalLoRAFineTuner(base_model_dir, setup=TRAJECTORY_SETUP).train(
        train=[conversation(ticket, WRONG_LABEL[label]) for ticket, label in TICKETS],
        validation=[conversation(ticket, label) for ticket, label in TICKETS],
        config=TrainingConfig(
            epochs=10,
            batch_size=4,
            learning_rate=1e-2,
            max_steps=5,
            eval_every_steps=3,  # passes at steps 3 and 5, the last
            checkpoint_every_steps=0,
            early_stopping_patience=1,
        ),
        output_dir=tmp_path / "job",
        on_progress=events.append,
        should_stop=lambda: False,
    )

    (third, third_loss), (last, last_loss) = [
        (event.step, event.val_loss or 0.0) for event in events if event.val_loss is not None
    ]
    assert (third, last) == (3, 5)
    assert last_loss > third_loss  # so the patience of 1 ran out at the last step
    assert (result.steps, result.best_step, result.val_loss) == (5, 3, third_loss)
    assert not result.stopped_early
