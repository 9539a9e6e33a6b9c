"""Does fine-tuning pay off on the demo task, and how much faster does the trainer's measured
setup make it? Three sides in one run.

    python bench/demo_finetune.py [--epochs 3] [--max-new-tokens 24]

Freezes the demo's clean examples with the product's own seeded 15 % split and trains a LoRA
adapter with the local provider twice (3 epochs, default hyperparameters, as the guide
recommends): once as the trainer was before it chose its setup by measurement (fp32 weights,
torch's fused attention, torch's dropout, every example's tokens run), once as it is now: the
setup its probe picks on this host (providers/local/precision.py: bf16 where that is faster),
and each batch's shared prefix run once a row. Each job's time is its whole train()
call: loading, training, validation passes, checkpoints. Then the base model and both adapters
are scored zero-shot on the validation split with the product's own metrics (generation in
fp32 for all three, and each adapter again with generation in bf16, to judge that setting by the
task's metric). The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.prepare import prepared_base_model  # noqa: E402
from evaluation.metrics import exact_match_normalised, token_f1  # noqa: E402
from providers.base import (  # noqa: E402
    Conversation,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
)
from providers.local.encoding import collate_packed  # noqa: E402
from providers.local.generation import LocalChatModel  # noqa: E402
from providers.local.loading import GENERATION_PRECISION_SETTING, pick_device  # noqa: E402
from providers.local.precision import TODAYS_ATTENTION, Precision, TrainingSetup  # noqa: E402
from providers.local.training import LocalLoRAFineTuner  # noqa: E402

DEMO_FILE = REPO / "config" / "demo" / "support_triage.jsonl"


def demo_split(
    validation_fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    # Imported lazily: the split lives in the datasets app, which needs Django settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from datasets.models import Split
    from datasets.services import split_assignment

    conversations = [json.loads(line)["messages"] for line in DEMO_FILE.read_text().splitlines()]
    splits = split_assignment(
        len(conversations), seed=seed, validation_fraction=validation_fraction
    )
    train = [c for c, s in zip(conversations, splits, strict=True) if s == Split.TRAIN]
    validation = [c for c, s in zip(conversations, splits, strict=True) if s == Split.VALIDATION]
    return train, validation


def score(
    model: LocalChatModel, items: list[Conversation], max_new_tokens: int
) -> tuple[float, float]:
    outputs = model.generate_batch([c[:-1] for c in items], max_new_tokens=max_new_tokens)
    references = [c[-1]["content"] for c in items]
    matches = [exact_match_normalised(o.text, r) for o, r in zip(outputs, references, strict=True)]
    f1s = [token_f1(o.text, r) for o, r in zip(outputs, references, strict=True)]
    return sum(matches) / len(items), sum(f1s) / len(items)


@dataclass(frozen=True)
class Side:
    train_s: float
    result: TrainingResult
    exact_match: float
    token_f1: float
    # The same adapter's exact match with generation in bf16 (FTPORTAL_LOCAL_GENERATION_PRECISION).
    bf16_generation_exact_match: float


def todays_fine_tuner(base_dir: Path) -> LocalLoRAFineTuner:
    """The trainer as it was before it measured its setup: fp32 weights on a CPU (bf16 on a
    GPU), torch's fused attention, torch's dropout and packed rows that run every example's
    tokens (use_half_draw_dropout and collate_for are patched around its runs)."""
    precision: Precision = "bf16" if pick_device(None).startswith("cuda") else "fp32"
    return LocalLoRAFineTuner(base_dir, setup=TrainingSetup(precision, TODAYS_ATTENTION))


def train_and_score(
    fine_tuner: LocalLoRAFineTuner,
    train: list[Conversation],
    validation: list[Conversation],
    config: TrainingConfig,
    max_new_tokens: int,
) -> Side:
    def report(progress: TrainingProgress) -> None:
        if progress.val_loss is not None:
            print(f"  step {progress.step}/{progress.total_steps} val_loss={progress.val_loss:.4f}")

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = fine_tuner.train(
            train=train,
            validation=validation,
            config=config,
            output_dir=Path(out),
            on_progress=report,
            should_stop=lambda: False,
        )
        train_s = time.perf_counter() - started
        chat = LocalChatModel(fine_tuner.base_model_dir, result.adapter_dir)
        exact_match, f1 = score(chat, validation, max_new_tokens)
        with mock.patch.dict(os.environ, {GENERATION_PRECISION_SETTING: "bf16"}):
            bf16_exact_match, _ = score(chat, validation, max_new_tokens)
    return Side(train_s, result, exact_match, f1, bf16_exact_match)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    base_dir = prepared_base_model()
    train, validation = demo_split(0.15, args.seed)
    config = TrainingConfig(epochs=args.epochs, learning_rate=args.learning_rate)
    print(f"train={len(train)} validation={len(validation)}")
    chosen_tuner = LocalLoRAFineTuner(base_dir)
    # The probe runs once per worker process, before its first job; timed apart from the jobs.
    probe_started = time.perf_counter()
    choice = chosen_tuner.host_choice(config)
    probe_s = time.perf_counter() - probe_started
    print(f"probe {probe_s:.1f}s: {choice.describe()}")

    print("today's trainer (fp32 on a CPU, torch's attention and dropout, packed rows):")
    with (
        mock.patch("providers.local.training.use_half_draw_dropout", return_value=0),
        mock.patch("providers.local.training.collate_for", return_value=("packed", collate_packed)),
    ):
        today = train_and_score(
            todays_fine_tuner(base_dir), train, validation, config, args.max_new_tokens
        )
    print(f"  {today.train_s:.1f}s, exact match {today.exact_match:.3f}")
    print(f"the trainer with its measured setup ({choice.setup.label}):")
    chosen = train_and_score(chosen_tuner, train, validation, config, args.max_new_tokens)
    print(f"  {chosen.train_s:.1f}s, exact match {chosen.exact_match:.3f}")
    base = LocalChatModel(base_dir)
    base_em, base_f1 = score(base, validation, args.max_new_tokens)

    def mfu(side: Side) -> str:
        value = side.result.model_flops_utilization
        return f"{value:.3f}" if value is not None else "none"

    figures = {
        "base_exact_match": f"{base_em:.3f}",
        "today_exact_match": f"{today.exact_match:.3f}",
        "tuned_exact_match": f"{chosen.exact_match:.3f}",
        "tuned_bf16_generation_exact_match": f"{chosen.bf16_generation_exact_match:.3f}",
        "today_bf16_generation_exact_match": f"{today.bf16_generation_exact_match:.3f}",
        "base_token_f1": f"{base_f1:.3f}",
        "today_token_f1": f"{today.token_f1:.3f}",
        "tuned_token_f1": f"{chosen.token_f1:.3f}",
        "f1_ratio": f"{chosen.token_f1 / base_f1 if base_f1 else float('inf'):.2f}",
        "today_val_loss": f"{today.result.val_loss or float('nan'):.4f}",
        "tuned_val_loss": f"{chosen.result.val_loss or float('nan'):.4f}",
        "today_train_s": f"{today.train_s:.1f}",
        "train_s": f"{chosen.train_s:.1f}",
        "speedup": f"{today.train_s / chosen.train_s:.2f}",
        "probe_s": f"{probe_s:.1f}",
        "today_mfu": mfu(today),
        "mfu": mfu(chosen),
        "setup": choice.setup.label,
        "steps": chosen.result.steps,
        "learning_rate": args.learning_rate,
        "device": chosen.result.device,
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
