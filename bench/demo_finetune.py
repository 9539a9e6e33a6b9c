"""Does fine-tuning pay off on the demo task? The fine-tuned model against its base, same run.

    python bench/demo_finetune.py [--epochs 3] [--max-new-tokens 24]

Freezes the demo's clean examples with the product's own seeded 15 % split, trains a LoRA adapter
with the local provider (3 epochs, default hyperparameters, as the guide recommends), then scores
base and fine-tuned models zero-shot on the validation split with the product's own metrics.
The base model is the baseline; the last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.prepare import prepared_base_model  # noqa: E402
from evaluation.metrics import exact_match_normalised, token_f1  # noqa: E402
from providers.base import Conversation, TrainingConfig, TrainingProgress  # noqa: E402
from providers.local.generation import LocalChatModel  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    base_dir = prepared_base_model()
    train, validation = demo_split(0.15, args.seed)
    print(f"train={len(train)} validation={len(validation)}")

    def report(progress: TrainingProgress) -> None:
        if progress.val_loss is not None:
            print(f"step {progress.step}/{progress.total_steps} val_loss={progress.val_loss:.4f}")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = LocalLoRAFineTuner(base_dir).train(
            train=train,
            validation=validation,
            config=TrainingConfig(epochs=args.epochs, learning_rate=args.learning_rate),
            output_dir=Path(out),
            on_progress=report,
            should_stop=lambda: False,
        )
        train_s = time.perf_counter() - started
        base_em, base_f1 = score(LocalChatModel(base_dir), validation, args.max_new_tokens)
        tuned_em, tuned_f1 = score(
            LocalChatModel(base_dir, result.adapter_dir), validation, args.max_new_tokens
        )
    print(
        f"base_exact_match={base_em:.3f} tuned_exact_match={tuned_em:.3f} "
        f"base_token_f1={base_f1:.3f} tuned_token_f1={tuned_f1:.3f} "
        f"f1_ratio={tuned_f1 / base_f1 if base_f1 else float('inf'):.2f} "
        f"train_s={train_s:.1f} steps={result.steps} learning_rate={args.learning_rate} "
        f"device={result.device}"
    )


if __name__ == "__main__":
    main()
