"""How torch's OpenMP threads should wait: a training step of the demo with each setting, on
idle cores and beside a busy process, in the same run.

    python bench/openmp_wait.py [--steps 8] [--precision auto|fp32|bf16]

Each side is a fresh process (libgomp reads its setting once, when torch loads) that runs the
trainer's forward and backward pass and optimizer step on the demo's first batches (the
trainer's own batch order, layout, loss and dropout; bf16 with eager attention where the CPU
multiplies bf16 natively, else fp32, unless --precision says): sleeping at once
(OMP_WAIT_POLICY=PASSIVE), spinning up to 1,000 times (GOMP_SPINCOUNT=1000), libgomp's default
spin (300,000), and no setting, so that the product chooses (providers/openmp.py). The busy
process is a Python loop. The first step is a warm-up. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS: dict[str, dict[str, str]] = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1000": {"GOMP_SPINCOUNT": "1000"},
    "default": {"GOMP_SPINCOUNT": "300000"},
    "chosen": {},
}
SETTING_NAMES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FTPORTAL_OPENMP_CHOSEN")


def run_steps(steps: int, wanted: str) -> None:
    """The child: time the steps and print their median and how the threads waited."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from providers.openmp import openmp_waiting

    # Before torch loads (importing providers does it too; this says so here).
    waiting = openmp_waiting()

    import torch

    from bench.demo_finetune import demo_split
    from bench.prepare import prepared_base_model
    from providers.base import TrainingConfig
    from providers.batching import epoch_batch_order
    from providers.local.encoding import encode_for_training
    from providers.local.loading import load_tokenizer
    from providers.local.loss import collate_for, token_loss_for
    from providers.local.precision import Precision, TrainingSetup, bf16_matrix_support
    from providers.local.training import LocalLoRAFineTuner

    base_dir = prepared_base_model()
    train, _ = demo_split(0.15, 42)
    config = TrainingConfig()
    tokenizer = load_tokenizer(base_dir)
    examples = [encode_for_training(tokenizer, c, config.max_seq_len) for c in train]
    precision: Precision = "bf16" if bf16_matrix_support("cpu") else "fp32"
    if wanted in ("fp32", "bf16"):
        precision = "bf16" if wanted == "bf16" else "fp32"
    tuner = LocalLoRAFineTuner(base_dir, setup=TrainingSetup(precision, "eager"))
    model = tuner._build_peft_model(config)
    model.train()
    token_loss = token_loss_for(model, "cpu")
    _, collate = collate_for(model, "cpu")
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    lengths = [len(example.input_ids) for example in examples]
    batches = epoch_batch_order(lengths, config.batch_size, config.seed, 0)[: steps + 1]
    seconds = []
    for indices in batches:
        began = time.perf_counter()
        batch = collate([examples[i] for i in indices], int(tokenizer.pad_token_id), "cpu")
        loss_sum, count = token_loss(batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
    print(
        json.dumps(
            {
                "median_s": statistics.median(seconds[1:]),
                "precision": precision,
                "waiting": waiting.describe(),
            }
        )
    )


def side(setting: str, steps: int, precision: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    environment.update(SETTINGS[setting])
    completed = subprocess.run(
        [sys.executable, __file__, "--child", "--steps", str(steps), "--precision", precision],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_steps(args.steps, args.precision)
        return

    figures: dict[str, str] = {}
    for scenario in ("idle", "busy"):
        busy = None
        if scenario == "busy":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for setting in SETTINGS:
                result = side(setting, args.steps, args.precision)
                step_seconds = float(str(result["median_s"]))
                print(f"{scenario} {setting}: {step_seconds:.3f} s a step; {result['waiting']}")
                figures[f"{scenario}_{setting}_s"] = f"{step_seconds:.3f}"
                figures["precision"] = str(result["precision"])
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        passive = float(figures[f"{scenario}_passive_s"])
        chosen = float(figures[f"{scenario}_chosen_s"])
        figures[f"{scenario}_chosen_speedup"] = f"{passive / chosen:.2f}"
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
