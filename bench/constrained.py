"""Constrained local generation against plain generation, in the same run.

    python bench/constrained.py [--contract json_schema|label_set] [--prompts 32]
                                [--batch-size 32] [--max-new-tokens 48] [--repeats 3]

Both sides use the same loaded model (SmolLM2-135M-Instruct, fp32 on CPU, bf16 on CUDA), the
same prompts (support tickets with a system prompt asking for the demo's answer: JSON with a
category and a priority, or one label) and LocalChatModel.generate_batch with the same batch
size; the constrained side passes the contract as an AnswerConstraint, so that at every step
llguidance computes each row's allowed tokens and the other logits are masked. Loading the
model, building llguidance's tokenizer and a warm-up of both sides are excluded from the times.

Each repeat times both sides, in alternating order; the medians are reported. The constrained
side usually writes fewer tokens (it stops on a complete answer, where the plain model often
rambles to max_new_tokens), so the run reports the time per generated token as well as the
total: the per-token ratio is the cost of the mask, the total ratio what an evaluation sees.
Validity is the share of replies that satisfy the contract (label in the set; JSON that parses
and validates against the schema).

The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jsonschema  # noqa: E402

from providers.openmp import choose_before_torch_loads  # noqa: E402

# As in the product: how torch's threads wait is chosen as it loads (providers/openmp.py).
choose_before_torch_loads()

import torch  # noqa: E402

from bench.prepare import prepared_base_model, time_sides  # noqa: E402
from providers.base import AnswerConstraint, Conversation, Generation  # noqa: E402
from providers.local.generation import LocalChatModel  # noqa: E402

CATEGORIES = ["billing", "bug", "feature request", "account"]
PRIORITIES = ["low", "normal", "urgent"]
CONTRACTS: dict[str, dict[str, Any]] = {
    "json_schema": {
        "kind": "json_schema",
        "schema": {
            "type": "object",
            "properties": {
                "category": {"enum": CATEGORIES},
                "priority": {"enum": PRIORITIES},
            },
            "required": ["category", "priority"],
            "additionalProperties": False,
        },
    },
    "label_set": {"kind": "label_set", "labels": CATEGORIES},
}
INSTRUCTIONS = {
    "json_schema": "Classify the support ticket. Answer with JSON only: "
    f'{{"category": one of {CATEGORIES}, "priority": one of {PRIORITIES}}}.',
    "label_set": f"Classify the support ticket. Answer with one of: {', '.join(CATEGORIES)}.",
}
TICKETS = [
    "I was charged twice for my subscription this month.",
    "The app crashes as soon as I open the settings page.",
    "Could you add a dark mode?",
    "I cannot log in since I changed my email address.",
    "Where can I download last year's invoices?",
    "Exports to CSV are empty unless I pick a date range first; this blocks our Monday report.",
    "Please let us set a different currency per workspace.",
    "My two-factor codes are rejected, I'm locked out of the admin account, urgent!",
]


def bench_prompts(contract: str, count: int) -> list[Conversation]:
    return [
        [
            {"role": "system", "content": INSTRUCTIONS[contract]},
            {"role": "user", "content": TICKETS[index % len(TICKETS)]},
        ]
        for index in range(count)
    ]


def satisfies(contract: dict[str, Any], reply: str) -> bool:
    if contract["kind"] == "label_set":
        return reply in contract["labels"]
    try:
        jsonschema.validate(json.loads(reply), contract["schema"])
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Constrained vs plain local generation.")
    parser.add_argument("--contract", choices=sorted(CONTRACTS), default="json_schema")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    chat = LocalChatModel(prepared_base_model())
    contract = CONTRACTS[args.contract]
    constraint = AnswerConstraint.from_contract(contract)
    prompts = bench_prompts(args.contract, args.prompts)

    def generate(constrained: bool) -> list[Generation]:
        return chat.generate_batch(
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            constraint=constraint if constrained else None,
        )

    # Warm-up: loads the model and builds llguidance's tokenizer outside the timings.
    for constrained in (False, True):
        chat.generate_batch(
            prompts[:2], max_new_tokens=4, constraint=constraint if constrained else None
        )
    print(
        f"setup: {time.perf_counter() - started:.1f}s (model in {chat.base_model_dir}, "
        f"device {chat.device}, {torch.get_num_threads()} torch threads, contract "
        f"{args.contract})"
    )

    sides: list[tuple[str, Callable[[], list[Generation]]]] = [
        ("unconstrained", lambda: generate(False)),
        ("constrained", lambda: generate(True)),
    ]
    times, replies = time_sides(sides, args.repeats)

    figures: dict[str, str | int] = {}
    for name in ("unconstrained", "constrained"):
        seconds = statistics.median(times[name])
        tokens = sum(generation.completion_tokens for generation in replies[name])
        valid = sum(satisfies(contract, generation.text) for generation in replies[name])
        figures[f"{name}_s"] = f"{seconds:.3f}"
        figures[f"{name}_tokens"] = tokens
        figures[f"{name}_ms_per_token"] = f"{1000 * seconds / tokens:.3f}"
        figures[f"valid_{name}"] = f"{valid}/{len(prompts)}"
        print(
            f"{name}: {seconds:.2f}s median over {args.repeats} repeats, {tokens} tokens "
            f"({1000 * seconds / tokens:.2f} ms per token), {valid}/{len(prompts)} replies "
            f"satisfy the contract; first reply {replies[name][0].text!r}"
        )
    slowdown = float(figures["constrained_s"]) / float(figures["unconstrained_s"])
    per_token = float(figures["constrained_ms_per_token"]) / float(
        figures["unconstrained_ms_per_token"]
    )
    print(
        f"constrained / unconstrained: {slowdown:.2f}x the time in all, {per_token:.2f}x the "
        f"time per generated token (batch {args.batch_size}, {args.prompts} prompts, "
        f"max_new_tokens={args.max_new_tokens})"
    )
    summary: dict[str, str | int] = {
        "unconstrained_s": figures["unconstrained_s"],
        "constrained_s": figures["constrained_s"],
        "slowdown": f"{slowdown:.2f}",
        "per_token_slowdown": f"{per_token:.2f}",
        "unconstrained_ms_per_token": figures["unconstrained_ms_per_token"],
        "constrained_ms_per_token": figures["constrained_ms_per_token"],
        "valid_unconstrained": figures["valid_unconstrained"],
        "valid_constrained": figures["valid_constrained"],
        "contract": args.contract,
        "batch_size": args.batch_size,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "device": chat.device,
    }
    print(" ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
