"""A training step on the demo's batches: packed rows against rows that run the batch's shared
prefix once, in the same run.

    python bench/shared_prefix.py [--batches 6]

Every demo example starts with the same system prompt and chat-template header. Both sides run
the trainer's forward and backward pass (SmolLM2-135M-Instruct in fp32, LoRA r=8 on q, k, v
and o with the trainer's dropout, the loss the trainer uses) on the same batches of the
trainer's own order (batch 8, seed 42, first epoch): one side lays each batch out as
encoding.collate_packed does, the other as encoding.collate_sharing_prefix does. The sides
alternate which goes first from batch to batch; the first batch is a warm-up and not counted.
Both give the same loss and gradients (tests/providers/test_local_speed.py). The last line is
machine-readable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from providers.openmp import choose_before_torch_loads  # noqa: E402

# As in the product: how torch's threads wait is chosen as it loads (providers/openmp.py).
choose_before_torch_loads()

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from bench.prepare import prepared_base_model  # noqa: E402
from providers.batching import epoch_batch_order  # noqa: E402
from providers.local.dropout import use_half_draw_dropout  # noqa: E402
from providers.local.encoding import (  # noqa: E402
    Collate,
    collate_packed,
    collate_sharing_prefix,
    encode_for_training,
    input_tokens,
)
from providers.local.loss import token_loss_for  # noqa: E402

DEMO_FILE = REPO / "config" / "demo" / "support_triage.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()

    base_dir = prepared_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    conversations = [json.loads(line)["messages"] for line in DEMO_FILE.read_text().splitlines()]
    examples = [encode_for_training(tokenizer, c, 2048) for c in conversations]
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.float32, local_files_only=True
    )
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    use_half_draw_dropout(model)
    model.train()
    loss = token_loss_for(model, "cpu")
    pad_token_id = int(tokenizer.pad_token_id)
    sides: dict[str, Collate] = {
        "packed": collate_packed,
        "shared": collate_sharing_prefix,
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    tokens_run = dict.fromkeys(sides, 0)
    lengths = [len(example.input_ids) for example in examples]
    batches = epoch_batch_order(lengths, 8, 42, 0)[: args.batches + 1]
    for index, indices in enumerate(batches):
        batch_examples = [examples[i] for i in indices]
        order = list(sides) if index % 2 == 0 else list(sides)[::-1]
        for name in order:
            batch = sides[name](batch_examples, pad_token_id, "cpu")
            began = time.perf_counter()
            summed, count = loss(batch)
            (summed / count).backward()
            model.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - began
            print(
                f"batch {index} {name}: {elapsed:.2f}s, rows x width {tuple(batch.input_ids.shape)}"
            )
            if index == 0:
                continue
            seconds[name].append(elapsed)
            tokens_run[name] += batch.computed_tokens or input_tokens(batch_examples)
    figures = {
        "packed_median_s": f"{statistics.median(seconds['packed']):.3f}",
        "shared_median_s": f"{statistics.median(seconds['shared']):.3f}",
        "speedup": f"{sum(seconds['packed']) / sum(seconds['shared']):.2f}",
        "packed_tokens_run": tokens_run["packed"],
        "shared_tokens_run": tokens_run["shared"],
        "tokens_ratio": f"{tokens_run['packed'] / tokens_run['shared']:.2f}",
        "batches": args.batches,
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
