"""Checkpoints of local training: written whole, loadable as adapters, resumable to the same run.

Real training with the real SmolLM2-135M-Instruct weights, on the CPU in fp32 (deterministic).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from providers.base import (
    CheckpointSaved,
    Conversation,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
)
from providers.local.checkpoints import (
    CHECKPOINT_FILES,
    RunState,
    checkpoint_dir,
    remove_unfinished_checkpoints,
    write_atomically,
)
from providers.local.generation import LocalChatModel
from providers.local.training import LocalLoRAFineTuner
from providers.local.weights import ensure_base_model

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "Classify the support ticket as billing, bug, feature or account. Answer with one word."
TICKETS = [
    ("I was charged twice this month.", "billing"),
    ("The app crashes when I open settings.", "bug"),
    ("Can you add a dark mode?", "feature"),
    ("How do I reset my password?", "account"),
    ("My invoice shows the wrong VAT number.", "billing"),
    ("Export to CSV gives an empty file, every single time, whatever the filter.", "bug"),
    ("Please support SSO with Okta.", "feature"),
    ("I cannot log in after changing my email.", "account"),
]
VALIDATION_TICKETS = [
    ("Why was my card declined at renewal?", "billing"),
    ("The dashboard shows a blank page.", "bug"),
]
# 8 examples in batches of 2: 4 steps per epoch, so 6 steps cross into the second epoch.
RESUMABLE = TrainingConfig(
    epochs=2,
    batch_size=2,
    learning_rate=2e-3,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.1,  # dropout draws random numbers: resuming must restore their stream
    max_steps=6,
    eval_every_steps=2,
    checkpoint_every_steps=3,
    seed=5,
)


def conversation(ticket: str, label: str) -> Conversation:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ticket},
        {"role": "assistant", "content": label},
    ]


TRAIN = [conversation(ticket, label) for ticket, label in TICKETS]
VALIDATION = [conversation(ticket, label) for ticket, label in VALIDATION_TICKETS]


def never_stop() -> bool:
    return False


@dataclass
class Run:
    result: TrainingResult
    progress: list[TrainingProgress]
    checkpoints: list[CheckpointSaved]


def train(
    base_model_dir: Path,
    output_dir: Path,
    config: TrainingConfig = RESUMABLE,
    *,
    should_stop: Callable[[], bool] = never_stop,
    progress: list[TrainingProgress] | None = None,
    resume_from: Path | None = None,
) -> Run:
    events: list[TrainingProgress] = [] if progress is None else progress
    saved: list[CheckpointSaved] = []
    result = LocalLoRAFineTuner(base_model_dir).train(
        train=TRAIN,
        validation=VALIDATION,
        config=config,
        output_dir=output_dir,
        on_progress=events.append,
        should_stop=should_stop,
        on_checkpoint=saved.append,
        resume_from=resume_from,
    )
    return Run(result, events, saved)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


@pytest.fixture(scope="module")
def uninterrupted(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(base_model_dir, tmp_path_factory.mktemp("uninterrupted"))


def adapter_weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "adapter_model.safetensors"))


def test_checkpoints_come_every_n_steps_and_at_the_end_each_a_loadable_adapter(
    uninterrupted: Run, base_model_dir: Path
) -> None:
    output_dir = uninterrupted.result.adapter_dir
    expected = [checkpoint_dir(output_dir, step) for step in (3, 6)]

    assert [saved.step for saved in uninterrupted.checkpoints] == [3, 6]
    assert [saved.path for saved in uninterrupted.checkpoints] == expected
    assert expected[0] == output_dir / "checkpoints" / "step-000003"
    assert sorted((output_dir / "checkpoints").iterdir()) == expected  # no leftovers
    for saved, event in zip(uninterrupted.checkpoints, uninterrupted.progress[2::3], strict=True):
        assert all((saved.path / name).is_file() for name in CHECKPOINT_FILES)
        assert saved.train_loss == event.train_loss
        state = json.loads((saved.path / "trainer_state.json").read_text())
        assert state["step"] == saved.step
        # Each batch's two tickets start with the same system prompt, which ran once a row.
        assert 0 < state["computed_tokens"] < state["trained_tokens"]
    assert uninterrupted.checkpoints[1].val_loss == uninterrupted.result.val_loss
    final, third = adapter_weights(expected[1]), adapter_weights(expected[0])
    result_weights = adapter_weights(output_dir)
    assert all(torch.equal(final[name], result_weights[name]) for name in final)
    assert not all(torch.equal(final[name], third[name]) for name in final)

    base = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
    loaded = PeftModel.from_pretrained(base, expected[0])
    lora = loaded.peft_config["default"]
    assert isinstance(lora, LoraConfig) and lora.r == RESUMABLE.lora_r
    prompt = [TRAIN[0][:-1]]
    from_checkpoint = LocalChatModel(base_model_dir, adapter_dir=expected[1])
    from_result = LocalChatModel(base_model_dir, adapter_dir=output_dir)
    assert from_checkpoint.generate_batch(prompt, max_new_tokens=4) == (
        from_result.generate_batch(prompt, max_new_tokens=4)
    )


def test_the_adapter_follows_the_lora_settings_of_the_config(uninterrupted: Run) -> None:
    adapter_config = json.loads(
        (uninterrupted.result.adapter_dir / "adapter_config.json").read_text()
    )

    assert adapter_config["r"] == RESUMABLE.lora_r
    assert adapter_config["lora_alpha"] == RESUMABLE.lora_alpha
    assert adapter_config["lora_dropout"] == RESUMABLE.lora_dropout
    assert sorted(adapter_config["target_modules"]) == sorted(RESUMABLE.target_modules)


def test_a_run_stopped_and_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(
    uninterrupted: Run, base_model_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "job"
    before: list[TrainingProgress] = []

    with pytest.raises(TrainingCancelled):
        train(base_model_dir, output_dir, should_stop=lambda: len(before) == 3, progress=before)
    resumed = train(base_model_dir, output_dir, resume_from=checkpoint_dir(output_dir, 3))

    assert [event.step for event in resumed.progress] == [4, 5, 6]
    stitched = before + resumed.progress
    assert len(stitched) == len(uninterrupted.progress) == 6
    for ours, reference in zip(stitched, uninterrupted.progress, strict=True):
        assert ours.step == reference.step
        assert ours.total_steps == reference.total_steps
        assert ours.epoch == reference.epoch
        assert ours.step_tokens == reference.step_tokens
        assert ours.learning_rate == reference.learning_rate
        assert ours.train_loss is not None and reference.train_loss is not None
        assert math.isclose(ours.train_loss, reference.train_loss, rel_tol=1e-6)
        assert (ours.val_loss is None) == (reference.val_loss is None)
        if ours.val_loss is not None and reference.val_loss is not None:
            assert math.isclose(ours.val_loss, reference.val_loss, rel_tol=1e-6)
    assert resumed.result.steps == 6
    assert resumed.result.trained_tokens == uninterrupted.result.trained_tokens
    computed = resumed.result.metrics["computed_tokens"]
    assert 0 < computed == uninterrupted.result.metrics["computed_tokens"]
    assert [saved.step for saved in resumed.checkpoints] == [6]
    ours_weights = adapter_weights(output_dir)
    reference_weights = adapter_weights(uninterrupted.result.adapter_dir)
    assert ours_weights.keys() == reference_weights.keys()
    for name, tensor in ours_weights.items():
        assert torch.allclose(tensor, reference_weights[name], rtol=1e-5, atol=1e-7), name


def test_a_checkpoint_from_before_prefix_sharing_counts_its_trained_tokens_as_run(
    uninterrupted: Run,
) -> None:
    record = json.loads((uninterrupted.checkpoints[0].path / "trainer_state.json").read_text())
    del record["computed_tokens"]

    assert RunState.from_json(record).computed_tokens == record["trained_tokens"]


def test_resuming_from_an_incomplete_or_corrupt_checkpoint_names_the_path_and_the_gap(
    uninterrupted: Run, base_model_dir: Path, tmp_path: Path
) -> None:
    original = checkpoint_dir(uninterrupted.result.adapter_dir, 3)
    without_state = tmp_path / "without-state"
    shutil.copytree(original, without_state)
    (without_state / "training_state.pt").unlink()
    (without_state / "adapter_config.json").unlink()
    garbled = tmp_path / "garbled"
    shutil.copytree(original, garbled)
    (garbled / "trainer_state.json").write_text('{"step": 3, "posi')
    truncated = tmp_path / "truncated"
    shutil.copytree(original, truncated)
    tensors = truncated / "training_state.pt"
    tensors.write_bytes(tensors.read_bytes()[:1000])

    for checkpoint, problem in [
        (without_state, "incomplete, missing adapter_config.json, training_state.pt"),
        (garbled, "trainer_state.json is unreadable"),
        (truncated, "a tensor file is unreadable"),
        (tmp_path / "nowhere", "it is not a directory"),
    ]:
        with pytest.raises(ProviderError) as raised:
            train(base_model_dir, tmp_path / "out", resume_from=checkpoint)
        assert f"cannot resume from {checkpoint}: " in str(raised.value)
        assert problem in str(raised.value)


def test_resuming_with_other_settings_or_other_data_is_refused(
    uninterrupted: Run, base_model_dir: Path, tmp_path: Path
) -> None:
    checkpoint = checkpoint_dir(uninterrupted.result.adapter_dir, 3)
    other_settings = TrainingConfig(
        **{**RESUMABLE.__dict__, "learning_rate": 1e-3, "batch_size": 4}
    )

    with pytest.raises(ProviderError, match=r"other settings \(batch_size, learning_rate\)"):
        train(base_model_dir, tmp_path / "out", other_settings, resume_from=checkpoint)
    with pytest.raises(ProviderError, match="different training set"):
        LocalLoRAFineTuner(base_model_dir).train(
            train=TRAIN[:-1],
            validation=VALIDATION,
            config=RESUMABLE,
            output_dir=tmp_path / "out",
            on_progress=lambda _progress: None,
            should_stop=never_stop,
            resume_from=checkpoint,
        )
    # Only how often checkpoints are written may change.
    more_often = TrainingConfig(**{**RESUMABLE.__dict__, "checkpoint_every_steps": 1})
    resumed = train(base_model_dir, tmp_path / "out", more_often, resume_from=checkpoint)
    assert [saved.step for saved in resumed.checkpoints] == [4, 5, 6]


def test_checkpoint_every_zero_saves_only_the_final_adapter(
    base_model_dir: Path, tmp_path: Path
) -> None:
    config = TrainingConfig(batch_size=4, max_steps=2, checkpoint_every_steps=0)

    run = train(base_model_dir, tmp_path / "job", config)

    assert run.checkpoints == []
    assert not (tmp_path / "job" / "checkpoints").exists()
    assert (tmp_path / "job" / "adapter_model.safetensors").is_file()


def test_an_atomic_write_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "checkpoints" / "step-000001"

    def fail_halfway(directory: Path) -> None:
        (directory / "adapter_config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(final, fail_halfway)

    assert list((tmp_path / "checkpoints").iterdir()) == []


def writes_file(name: str, text: str) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        (directory / name).write_text(text)

    return write


def test_an_atomic_write_replaces_an_earlier_copy_of_the_same_step(tmp_path: Path) -> None:
    final = tmp_path / "checkpoints" / "step-000001"

    write_atomically(final, writes_file("a.txt", "first"))
    write_atomically(final, writes_file("b.txt", "second"))

    assert sorted(path.name for path in final.iterdir()) == ["b.txt"]
    assert final.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700
    assert list((tmp_path / "checkpoints").iterdir()) == [final]


def test_a_process_killed_mid_write_leaves_no_checkpoint_that_looks_complete(
    tmp_path: Path,
) -> None:
    output_dir = tmp_path / "job"
    killed_writer = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from providers.local.checkpoints import checkpoint_dir, write_atomically

        def write_then_die(directory: Path) -> None:
            (directory / "adapter_config.json").write_text("{{}}")
            os.kill(os.getpid(), signal.SIGKILL)

        write_atomically(checkpoint_dir(Path({str(output_dir)!r}), 1), write_then_die)
        """
    )

    finished = subprocess.run(
        [sys.executable, "-c", killed_writer], cwd=REPO, capture_output=True, timeout=120
    )

    assert finished.returncode == -9, finished.stderr.decode()
    assert not checkpoint_dir(output_dir, 1).exists()
    leftovers = list((output_dir / "checkpoints").iterdir())
    assert [path.name.startswith(".step-000001.tmp-") for path in leftovers] == [True]
    remove_unfinished_checkpoints(output_dir)
    assert list((output_dir / "checkpoints").iterdir()) == []
