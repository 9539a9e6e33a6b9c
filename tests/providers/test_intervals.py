"""The validation and checkpoint intervals a local job gets when the lead leaves them unset
(providers.base.default_intervals): validation at most VALIDATION_SHARE of the training time,
checkpoint saves a small share, both scaled to the data; and the trainer applying the rule."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from providers.base import (
    CHECKPOINT_SHARE,
    MAX_DEFAULT_CHECKPOINTS,
    MEASURED_CPU_COSTS,
    VALIDATION_SHARE,
    Conversation,
    LocalCosts,
    StepPlan,
    TrainingConfig,
    TrainingProgress,
    default_intervals,
    step_plan,
)

# 425 training examples of about 37 tokens and 75 validation ones: the many-label job.
TRAIN_EXAMPLES = 425
TOKENS_PER_EXAMPLE = 37
VALIDATION_TOKENS = 75 * TOKENS_PER_EXAMPLE
COSTS = LocalCosts(
    training_token_seconds=1 / 100,
    validation_token_seconds=0.45 / 100,
    save_seconds=0.3,
    load_seconds=3.0,
)


def chosen(config: TrainingConfig, *, validation_tokens: int = VALIDATION_TOKENS) -> TrainingConfig:
    return default_intervals(
        config,
        train_examples=TRAIN_EXAMPLES,
        train_tokens_per_epoch=TRAIN_EXAMPLES * TOKENS_PER_EXAMPLE,
        validation_tokens=validation_tokens,
        costs=COSTS,
    )


def shares(
    config: TrainingConfig, validation_tokens: int = VALIDATION_TOKENS
) -> tuple[float, float]:
    """(validation, checkpoint saves) seconds over the training steps' seconds."""
    plan = step_plan(TRAIN_EXAMPLES, config)
    assert config.eval_every_steps is not None and config.checkpoint_every_steps is not None
    training = plan.total_steps * TRAIN_EXAMPLES * TOKENS_PER_EXAMPLE / plan.steps_per_epoch
    training_seconds = training * COSTS.training_token_seconds
    passes = plan.evaluations_after(0, config.eval_every_steps)
    validation = passes * validation_tokens * COSTS.validation_token_seconds
    saves = plan.checkpoints(config.checkpoint_every_steps) * COSTS.save_seconds
    return validation / training_seconds, saves / training_seconds


def test_unset_intervals_keep_validation_within_its_share_and_no_shorter_interval_would():
    config = chosen(TrainingConfig())
    assert config.eval_every_steps is not None and config.eval_every_steps >= 1
    validation_share, save_share = shares(config)
    assert validation_share <= VALIDATION_SHARE
    assert save_share <= CHECKPOINT_SHARE
    # The old default, every 5 steps, spent most of the training time again on validation.
    old = dataclasses.replace(config, eval_every_steps=5)
    assert shares(old)[0] > 5 * VALIDATION_SHARE
    # The shortest interval within the share: one step less validates more than it allows.
    assert config.eval_every_steps > 1
    shorter = dataclasses.replace(config, eval_every_steps=config.eval_every_steps - 1)
    assert shares(shorter)[0] > VALIDATION_SHARE


def test_the_interval_scales_with_the_validation_set():
    small = chosen(TrainingConfig(), validation_tokens=VALIDATION_TOKENS // 4)
    large = chosen(TrainingConfig(), validation_tokens=VALIDATION_TOKENS * 2)
    assert small.eval_every_steps is not None and large.eval_every_steps is not None
    assert small.eval_every_steps < large.eval_every_steps
    for config, tokens in ((small, VALIDATION_TOKENS // 4), (large, VALIDATION_TOKENS * 2)):
        assert shares(config, tokens)[0] <= VALIDATION_SHARE


def test_a_validation_set_too_large_for_the_share_is_read_once_at_the_end():
    huge = VALIDATION_TOKENS * 4
    config = chosen(TrainingConfig(), validation_tokens=huge)
    plan = step_plan(TRAIN_EXAMPLES, config)
    assert config.eval_every_steps == plan.total_steps
    assert shares(config, huge)[0] > VALIDATION_SHARE  # even the one pass is over the share


def test_checkpoints_fall_on_validation_steps_and_stay_few():
    config = chosen(TrainingConfig(epochs=20))
    assert config.eval_every_steps is not None and config.checkpoint_every_steps is not None
    assert config.checkpoint_every_steps % config.eval_every_steps == 0
    plan = step_plan(TRAIN_EXAMPLES, config)
    assert plan.checkpoints(config.checkpoint_every_steps) <= MAX_DEFAULT_CHECKPOINTS
    assert shares(config)[1] <= CHECKPOINT_SHARE


def test_intervals_the_lead_set_are_kept_as_they_are():
    both = TrainingConfig(eval_every_steps=5, checkpoint_every_steps=0)
    assert chosen(both) == both
    one = chosen(TrainingConfig(eval_every_steps=3))
    assert one.eval_every_steps == 3
    assert one.checkpoint_every_steps is not None and one.checkpoint_every_steps % 3 == 0


def test_without_validation_examples_only_the_last_step_would_validate():
    config = chosen(TrainingConfig(), validation_tokens=0)
    plan = step_plan(TRAIN_EXAMPLES, config)
    assert config.eval_every_steps == plan.total_steps
    assert config.checkpoint_every_steps is not None and config.checkpoint_every_steps >= 1


def test_a_plan_without_steps_gets_intervals_of_one():
    config = default_intervals(
        TrainingConfig(), train_examples=0, train_tokens_per_epoch=0, validation_tokens=10
    )
    assert (config.eval_every_steps, config.checkpoint_every_steps) == (1, 1)


def test_validation_passes_and_checkpoints_count_every_multiple_and_the_last_step():
    plan = StepPlan(steps_per_epoch=6, total_steps=12, epochs=2)
    assert plan.checkpoints(5) == 3  # 5, 10, 12
    assert plan.checkpoints(4) == 3  # 4, 8, 12
    assert plan.checkpoints(0) == 0
    assert plan.evaluations_after(0, 100) == 1  # the last step only


def test_the_measured_cpu_costs_make_a_validation_token_cheaper_than_a_training_one():
    assert 0 < MEASURED_CPU_COSTS.validation_cost_ratio < 1


# --- the trainer applies the rule when a config leaves the intervals unset ---------------------

SYSTEM = "Name the intent."
MESSAGES = [
    ("my card has not arrived", "card_arrival"),
    ("I lost my card", "card_lost"),
    ("someone stole my card", "card_stolen"),
    ("the ATM kept my card", "card_swallowed"),
    ("how do I change my PIN", "change_pin"),
    ("my PIN is blocked", "pin_blocked"),
]


def conversation(text: str, label: str) -> Conversation:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from providers.local.weights import ensure_base_model

    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


def test_the_trainer_chooses_unset_intervals_by_the_same_rule_and_reports_what_it_measured(
    base_model_dir: Path, tmp_path: Path
) -> None:
    from providers.local.encoding import encode_for_training, input_tokens
    from providers.local.loading import load_tokenizer
    from providers.local.training import LocalLoRAFineTuner

    train = [conversation(text, label) for text, label in MESSAGES[:4]]
    validation = [conversation(text, label) for text, label in MESSAGES[4:]]
    config = TrainingConfig(batch_size=2, max_steps=3, seed=1)
    events: list[TrainingProgress] = []

    result = LocalLoRAFineTuner(base_model_dir).train(
        train=train,
        validation=validation,
        config=config,
        output_dir=tmp_path / "adapter",
        on_progress=events.append,
        should_stop=lambda: False,
    )

    tokenizer = load_tokenizer(base_model_dir)
    encoded = [encode_for_training(tokenizer, c, config.max_seq_len) for c in train]
    encoded_validation = [encode_for_training(tokenizer, c, config.max_seq_len) for c in validation]
    expected = default_intervals(
        config,
        train_examples=len(train),
        train_tokens_per_epoch=input_tokens(encoded),
        validation_tokens=input_tokens(encoded_validation),
    )
    assert expected.eval_every_steps is not None and expected.checkpoint_every_steps is not None
    metrics = result.metrics
    assert metrics["eval_every_steps"] == expected.eval_every_steps
    assert metrics["checkpoint_every_steps"] == expected.checkpoint_every_steps
    plan = step_plan(len(train), expected)
    passes = plan.evaluations_after(0, expected.eval_every_steps)
    assert metrics["validation_passes"] == passes
    assert sum(event.val_loss is not None for event in events) == passes
    assert metrics["validation_tokens"] == input_tokens(encoded_validation)
    assert metrics["validation_seconds"] > 0
    assert metrics["checkpoint_saves"] == plan.checkpoints(expected.checkpoint_every_steps)
    assert metrics["checkpoint_seconds"] > 0
    assert 0 < metrics["load_seconds"] < result.seconds
    assert math.isfinite(metrics["tokens_per_second"]) and metrics["tokens_per_second"] > 0
    # What a later job's estimate scales its speeds by: the batches shared the system prompt.
    assert metrics["shares_prefix"] == 1.0
    assert 0 < metrics["computed_tokens"] < metrics["trained_tokens"]
    assert 0 < metrics["validation_computed_tokens"] < metrics["validation_tokens"]
