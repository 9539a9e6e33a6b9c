"""The training setup chosen by measurement on this host (precision, attention kernel), the
cheaper LoRA dropout, and model FLOP utilisation, on the real model."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from providers.base import (
    Conversation,
    ProviderError,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
)
from providers.local import precision
from providers.local.dropout import HalfDrawDropout, use_half_draw_dropout
from providers.local.generation import LocalChatModel
from providers.local.loading import GENERATION_PRECISION_SETTING, generation_dtype
from providers.local.loss import BatchLayout
from providers.local.precision import (
    PRECISION_SETTING,
    PRECISIONS,
    AdapterShape,
    HostChoice,
    Precision,
    TrainingSetup,
    bf16_matrix_support,
    candidate_setups,
    fastest_with_the_best_layout,
    forced_precision,
    host_choice,
    peak_matrix_flops,
    precision_dtype,
)
from providers.local.training import LocalLoRAFineTuner
from providers.local.utilisation import ModelFlops, utilisation
from providers.local.weights import ensure_base_model
from providers.openmp import openmp_waiting

DEMO_FILE = Path(__file__).resolve().parents[2] / "config" / "demo" / "support_triage.jsonl"
DEFAULT_ADAPTER = AdapterShape(8, ("q_proj", "k_proj", "v_proj", "o_proj"))


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


@pytest.fixture
def fresh_choice() -> Iterator[None]:
    """Each test measures anew, and leaves no choice made under its settings behind."""
    host_choice.cache_clear()
    yield
    host_choice.cache_clear()


# --- dropout ------------------------------------------------------------------------------------


def test_half_draw_dropout_drops_at_its_rate_and_keeps_the_expected_value() -> None:
    torch.manual_seed(0)
    dropout = HalfDrawDropout(0.05)
    inputs = torch.ones(1000, 1001)  # an odd count: the last draw is half used
    outputs = dropout(inputs)
    dropped = float((outputs == 0).float().mean())
    assert abs(dropped - 0.05) < 0.002
    kept = outputs[outputs != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - dropout.p)))
    assert abs(float(outputs.mean()) - 1.0) < 0.003


def test_half_draw_dropout_repeats_under_a_seed_and_differs_without() -> None:
    dropout = HalfDrawDropout(0.3)
    inputs = torch.randn(64, 96)
    torch.manual_seed(7)
    first = dropout(inputs)
    torch.manual_seed(7)
    again = dropout(inputs)
    other = dropout(inputs)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_half_draw_dropout_passes_gradients_only_where_it_keeps() -> None:
    dropout = HalfDrawDropout(0.5)
    inputs = torch.randn(40, 50, requires_grad=True)
    outputs = dropout(inputs)
    outputs.sum().backward()
    assert inputs.grad is not None
    expected = torch.where(outputs != 0, 1 / (1 - dropout.p), 0.0)
    assert torch.allclose(inputs.grad, expected)


def test_half_draw_dropout_is_the_identity_when_evaluating_or_at_zero() -> None:
    inputs = torch.randn(8, 16)
    evaluating = HalfDrawDropout(0.5).eval()
    assert evaluating(inputs) is inputs
    assert HalfDrawDropout(0.0)(inputs) is inputs
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        HalfDrawDropout(1.0)


def test_every_lora_dropout_of_a_model_is_replaced(base_model_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    assert isinstance(model, PeftModel)
    layers = base.config.num_hidden_layers
    assert use_half_draw_dropout(model) == 2 * layers
    replaced = [m for m in model.modules() if isinstance(m, HalfDrawDropout)]
    assert len(replaced) == 2 * layers
    assert all(abs(m.p - 0.1) < 1 / 65536 for m in replaced)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())


# --- the choice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("", None), ("auto", None), (" BF16 ", "bf16")])
def test_the_precision_setting_forces_or_leaves_it_to_measurement(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv(PRECISION_SETTING, value)
    assert forced_precision() == expected


def test_a_wrong_precision_setting_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_SETTING, "fp16")
    with pytest.raises(ProviderError, match=f"{PRECISION_SETTING} must be auto, fp32 or bf16"):
        forced_precision()


def test_without_bf16_matrix_units_only_fp32_is_a_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "bf16_matrix_support", lambda device: False)
    setups, note = candidate_setups("cpu", None)
    assert {setup.precision for setup in setups} == {"fp32"}
    assert "no bf16 matrix support" in note
    forced, forced_note = candidate_setups("cpu", "bf16")
    assert {setup.precision for setup in forced} == {"bf16"}
    assert PRECISION_SETTING in forced_note
    assert "emulated" in forced_note


@pytest.mark.usefixtures("fresh_choice")
def test_the_fastest_measured_candidate_of_the_best_layout_is_chosen(
    base_model_dir: Path,
) -> None:
    choice = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER)
    candidates, _ = candidate_setups("cpu", None)
    labels = {setup.label for setup in candidates}
    assert set(choice.probe_seconds) == set(choice.layouts) == labels
    # SmolLM2's attention keeps masked rows apart in fp32 with either kernel.
    assert choice.layouts["fp32/eager"] == choice.layouts["fp32/sdpa"] == "sharing its prefix"
    assert choice.layouts[choice.setup.label] == "sharing its prefix"
    sharing = [label for label in labels if choice.layouts[label] == "sharing its prefix"]
    assert choice.setup.label == min(sharing, key=choice.probe_seconds.__getitem__)
    assert choice.peak_flops > 1e9
    description = choice.describe()
    assert description.startswith(f"Training in {choice.setup.precision}")
    for label in choice.probe_seconds:
        assert label in description


def test_a_faster_kernel_that_cannot_share_prefixes_is_passed_over() -> None:
    setups = [TrainingSetup("bf16", "sdpa"), TrainingSetup("bf16", "eager")]
    seconds = {"bf16/sdpa": 0.30, "bf16/eager": 0.40}
    layouts: dict[str, BatchLayout] = {"bf16/sdpa": "padded", "bf16/eager": "sharing its prefix"}

    assert fastest_with_the_best_layout(setups, seconds, layouts) == setups[1]
    choice = HostChoice(setups[1], seconds, 1e9, "", layouts)
    assert choice.describe().startswith(
        "Training in bf16 with eager attention: fastest of those that lay batches out sharing "
        "its prefix in a probe pass of 4 layers (bf16/sdpa 300 ms, bf16/eager 400 ms); "
        "the others lay them out bf16/sdpa padded"
    )
    # How torch's threads wait, chosen as it loaded (providers/openmp.py), ends the line.
    assert choice.describe().endswith(f"; {openmp_waiting().describe()}")
    # Where no candidate shares, the fastest of those that pack wins.
    packing: dict[str, BatchLayout] = {"bf16/sdpa": "packed", "bf16/eager": "packed"}
    assert fastest_with_the_best_layout(setups, seconds, packing) == setups[0]


@pytest.mark.usefixtures("fresh_choice")
def test_a_forced_precision_is_kept_and_its_attention_still_measured(
    base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRECISION_SETTING, "fp32")
    choice = host_choice(base_model_dir, "cpu", DEFAULT_ADAPTER)
    assert choice.setup.precision == "fp32"
    assert set(choice.probe_seconds) == {"fp32/sdpa", "fp32/eager"}
    assert PRECISION_SETTING in choice.describe()


@pytest.mark.usefixtures("fresh_choice")
def test_a_model_the_probe_cannot_load_trains_as_before(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    choice = host_choice(tmp_path, "cpu", DEFAULT_ADAPTER)
    assert choice.setup == TrainingSetup("fp32", "sdpa")
    assert choice.probe_seconds == {}
    assert "probe failed" in choice.describe()


# --- utilisation --------------------------------------------------------------------------------


def test_model_flops_count_every_frozen_decoder_matrix_and_the_head(base_model_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
    config = base.config
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    attention = 2 * hidden * hidden + 2 * hidden * config.num_key_value_heads * head_dim
    per_layer = attention + 3 * hidden * inner
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert isinstance(model, PeftModel)
    flops = ModelFlops.of(base)
    # LoRA's own matrices are trainable, so not counted.
    assert flops.per_input_token == 4 * config.num_hidden_layers * per_layer
    assert flops.per_predicted_token == 4 * hidden * config.vocab_size
    assert flops.of_tokens(10, 2) == 10 * flops.per_input_token + 2 * flops.per_predicted_token


@pytest.mark.parametrize("chosen", PRECISIONS)
def test_the_peak_is_not_below_the_rate_of_the_models_own_products(chosen: Precision) -> None:
    """Utilisation is measured against this peak, so a product of a layer's shape must not
    beat it by much (a small product can run a little faster from cache, and the machine may
    be busy; the margin is for both). A peak taken from a slower kind of product than the
    layers call once put a bf16 job at 10 times its "peak"."""
    peak = peak_matrix_flops(chosen, "cpu")
    dtype = precision_dtype(chosen)
    rows, hidden, inner = 1024, 576, 1536  # a packed batch through SmolLM2's MLP
    inputs = torch.randn(rows, hidden).to(dtype)
    weight = torch.randn(inner, hidden).to(dtype)
    torch.nn.functional.linear(inputs, weight)
    best = float("inf")
    for _ in range(4):
        began = time.perf_counter()
        torch.nn.functional.linear(inputs, weight)
        best = min(best, time.perf_counter() - began)
    assert 2 * rows * hidden * inner / best <= 3 * peak


def test_utilisation_is_unknown_without_a_measured_time_or_peak() -> None:
    assert utilisation(1e12, 2.0, 1e12) == 0.5
    assert utilisation(1e12, 0.0, 1e12) is None
    assert utilisation(1e12, 2.0, 0.0) is None
    assert utilisation(0.0, 2.0, 1e12) is None


# --- training in each precision -----------------------------------------------------------------


def demo_conversations() -> list[Conversation]:
    lines = DEMO_FILE.read_text().splitlines()
    return [json.loads(line)["messages"] for line in lines]


def train_demo_slice(
    base_model_dir: Path, setup: TrainingSetup, tmp_path: Path
) -> tuple[TrainingResult, list[TrainingProgress]]:
    conversations = demo_conversations()
    progress: list[TrainingProgress] = []
    fine_tuner = LocalLoRAFineTuner(base_model_dir, "cpu", setup=setup)
    result = fine_tuner.train(
        train=conversations[:48],
        validation=conversations[-16:],
        config=TrainingConfig(epochs=1, eval_every_steps=3, checkpoint_every_steps=0),
        output_dir=tmp_path / setup.precision,
        on_progress=progress.append,
        should_stop=lambda: False,
    )
    return result, progress


@pytest.mark.skipif(
    not bf16_matrix_support("cpu"),
    reason="this CPU has no bf16 matrix units (AVX-512 bf16 or AMX): bf16 runs emulated, a "
    "6-step job took 23 minutes, and the probe never picks it here",
)
def test_bf16_training_keeps_lora_in_fp32_and_learns_as_fp32_does(
    base_model_dir: Path, tmp_path: Path
) -> None:
    fp32, fp32_progress = train_demo_slice(base_model_dir, TrainingSetup("fp32", "sdpa"), tmp_path)
    bf16, bf16_progress = train_demo_slice(base_model_dir, TrainingSetup("bf16", "eager"), tmp_path)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    for result in (fp32, bf16):
        assert result.model_flops_utilization is not None
        assert 0 < result.model_flops_utilization < 1
        assert result.metrics["peak_flops"] > 0
    # The adapter is saved in fp32 whatever the base weights were.
    weights = load_file(str(bf16.adapter_dir / "adapter_model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    # Quality: the validation loss falls in both, and bf16 ends within noise of fp32 (runs of
    # the same settings with other seeds differ by several percent at this length).
    fp32_curve = [p.val_loss for p in fp32_progress if p.val_loss is not None]
    bf16_curve = [p.val_loss for p in bf16_progress if p.val_loss is not None]
    assert fp32_curve[-1] < fp32_curve[0] and bf16_curve[-1] < bf16_curve[0]
    assert bf16.val_loss is not None and fp32.val_loss is not None
    assert abs(bf16.val_loss - fp32.val_loss) <= 0.15 * fp32.val_loss


# --- generation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "device", "expected"),
    [
        ("", "cpu", torch.float32),
        ("", "cuda", torch.bfloat16),
        ("bf16", "cpu", torch.bfloat16),
        ("FP32", "cuda", torch.float32),
    ],
)
def test_generation_is_fp32_on_cpus_unless_set(
    monkeypatch: pytest.MonkeyPatch, value: str, device: str, expected: torch.dtype
) -> None:
    monkeypatch.setenv(GENERATION_PRECISION_SETTING, value)
    assert generation_dtype(device) == expected


def test_a_wrong_generation_precision_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GENERATION_PRECISION_SETTING, "int8")
    with pytest.raises(ProviderError, match=f"{GENERATION_PRECISION_SETTING} must be"):
        generation_dtype("cpu")


def test_bf16_generation_loads_its_own_bf16_model(
    base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = LocalChatModel(base_model_dir, device="cpu")
    fp32_model, _ = chat.model_and_tokenizer()
    monkeypatch.setenv(GENERATION_PRECISION_SETTING, "bf16")
    bf16_model, _ = chat.model_and_tokenizer()
    assert fp32_model.dtype == torch.float32
    assert bf16_model.dtype == torch.bfloat16
    [reply] = chat.generate_batch([[{"role": "user", "content": "Say hello."}]], max_new_tokens=4)
    assert reply.completion_tokens > 0
