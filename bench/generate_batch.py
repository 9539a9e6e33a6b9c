"""Batched vs one-at-a-time greedy generation with the local provider, in the same run.

    python bench/generate_batch.py [--prompts 32] [--batch-size 32] [--max-new-tokens 32]

The baseline is batch_size=1 (what a naive evaluation loop does). Each repeat times both, in
alternating order, so background load hits them alike. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from providers.base import Conversation, Generation  # noqa: E402
from providers.local import LocalChatModel  # noqa: E402
from providers.local_weights import ensure_base_model  # noqa: E402

TOPICS = [
    "invoices",
    "password resets",
    "shipping delays",
    "refunds",
    "two-factor login",
    "CSV exports",
    "dark mode",
    "API rate limits",
]
ASKS = [
    "Write one sentence a support agent could say about {}.",
    "Give a short title for a help article about {}.",
    "Name one common customer complaint about {}.",
    "In a few words, why do customers ask about {}?",
]


def bench_prompts(count: int) -> list[Conversation]:
    # Varied lengths, as in a real evaluation set, so batches carry some padding.
    texts = [ask.format(topic) for topic in TOPICS for ask in ASKS]
    return [[{"role": "user", "content": texts[index % len(texts)]}] for index in range(count)]


def timed(
    model: LocalChatModel, prompts: list[Conversation], batch_size: int, max_new_tokens: int
) -> tuple[float, list[Generation]]:
    started = time.perf_counter()
    generations = model.generate_batch(
        prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return time.perf_counter() - started, generations


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Batched vs sequential local generation.")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cache_dir = Path(os.environ.get("FTPORTAL_MODEL_CACHE") or REPO / "var" / "models")
    started = time.perf_counter()
    base_model_dir = ensure_base_model(cache_dir)
    model = LocalChatModel(base_model_dir)
    prompts = bench_prompts(args.prompts)
    # Warm-up: loads the model into the cache and pays one-off costs outside the timings.
    model.generate_batch(prompts[:2], max_new_tokens=4, batch_size=2)
    print(f"setup: {time.perf_counter() - started:.1f}s (model in {base_model_dir})")

    batched_times: list[float] = []
    sequential_times: list[float] = []
    identical = 0
    for repeat in range(args.repeats):
        runs = [("batched", args.batch_size), ("sequential", 1)]
        if repeat % 2:
            runs.reverse()
        outputs: dict[str, list[Generation]] = {}
        for name, batch_size in runs:
            seconds, outputs[name] = timed(model, prompts, batch_size, args.max_new_tokens)
            (batched_times if name == "batched" else sequential_times).append(seconds)
            print(f"repeat {repeat + 1}: {name} (batch_size={batch_size}) {seconds:.2f}s")
        identical = sum(
            a.text == b.text for a, b in zip(outputs["batched"], outputs["sequential"], strict=True)
        )

    batched_s = statistics.median(batched_times)
    sequential_s = statistics.median(sequential_times)
    new_tokens = sum(g.completion_tokens for g in outputs["batched"])
    print(
        f"median over {args.repeats} repeats, {args.prompts} prompts, "
        f"max_new_tokens={args.max_new_tokens}, {new_tokens} new tokens per run: "
        f"batched {batched_s:.2f}s, sequential {sequential_s:.2f}s; "
        f"{identical}/{args.prompts} outputs identical between the two"
    )
    print(
        f"batched_s={batched_s:.3f} sequential_s={sequential_s:.3f} "
        f"speedup={sequential_s / batched_s:.2f} identical={identical}/{args.prompts} "
        f"prompts={args.prompts} batch_size={args.batch_size} "
        f"max_new_tokens={args.max_new_tokens}"
    )


if __name__ == "__main__":
    main()
