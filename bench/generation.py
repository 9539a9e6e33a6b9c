"""Local generation: batched greedy decoding against sequential generate(), in the same run.

    python bench/generation.py [--prompts 32] [--batch-size 32] [--max-new-tokens 32] [--repeats 3]

All sides use the same loaded model (SmolLM2-135M-Instruct, fp32 on CPU, bf16 on CUDA), the
same prompts (short support questions of varied length, rendered with the model's chat template)
and the same torch thread count, and decode greedily.

The baseline is the naive evaluation loop: for each prompt in turn, tokenize it and call the
model's own generate(max_new_tokens, do_sample=False) under torch.inference_mode. The candidate
is LocalChatModel.generate_batch(prompts, batch_size=32). Each side's time covers rendering,
tokenizing, generating and decoding the replies; loading the model and a warm-up are excluded.

On CPU, generate_batch runs its linear layers through oneDNN at the row counts where that was
measured faster on this host, else through torch's linear (providers/local/cpu_matmul.py); the
run prints which it chose. Two more sides run generate_batch with each product forced ("batched,
torch linear" and "batched, oneDNN linear", the latter at every batch of two rows or more), so
that the run shows how much of the speedup is batching, how much the matrix product, and
whether the measured choice picked the faster one. A fifth, "batched, bf16", loads the model in
bf16 (FTPORTAL_LOCAL_GENERATION_PRECISION=bf16): its speed and how many of its replies match
fp32's are printed apart, since bf16 rounding may change a greedy choice.

Each repeat times every side, in alternating order; the medians are reported, and each repeat's
own ratio. Examples per second are prompts over the median time. Other work on the machine slows
the sequential side more than the batched one (its many short steps each wait for every torch
thread), so a busy machine overstates the speedup: each timing is printed with the load average,
and figures are best taken on an idle machine.

The replies are compared text for text: greedy decoding must give the same replies whether a
prompt is alone or in a padded batch; the count of identical replies is reported and any that
differ are printed.

The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from providers.openmp import choose_before_torch_loads, openmp_waiting  # noqa: E402

# As in the product: how torch's threads wait is chosen as it loads (providers/openmp.py).
choose_before_torch_loads()

import torch  # noqa: E402

from bench.prepare import prepared_base_model, time_sides  # noqa: E402
from providers.base import Conversation  # noqa: E402
from providers.local import cpu_matmul  # noqa: E402
from providers.local.generation import LocalChatModel  # noqa: E402
from providers.local.loading import GENERATION_PRECISION_SETTING  # noqa: E402

# Sides whose replies may differ from fp32 decoding's by rounding (counted apart).
INEXACT_SIDES = ("sequential", "batched, bf16")

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


def sequential_replies(
    chat: LocalChatModel, prompts: list[Conversation], max_new_tokens: int
) -> list[str]:
    """The naive loop: plain generate() on one prompt at a time."""
    model, tokenizer = chat.model_and_tokenizer()
    replies = []
    for conversation in prompts:
        text = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(chat.device)
        with torch.inference_mode():
            output = model.generate(  # type: ignore[operator]
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        reply = tokenizer.decode(new_tokens, skip_special_tokens=True)
        assert isinstance(reply, str)
        replies.append(reply.strip())
    return replies


def batched_replies(
    chat: LocalChatModel, prompts: list[Conversation], max_new_tokens: int, batch_size: int
) -> list[str]:
    generations = chat.generate_batch(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [generation.text for generation in generations]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Batched vs sequential local generation.")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def chosen_products(model: torch.nn.Module) -> str:
    """The measured choice as one word: torch, or onednn_from_N_rows."""
    min_rows = cpu_matmul.onednn_min_rows(cpu_matmul.weight_shapes(model))
    return "torch" if min_rows is None else f"onednn_from_{min_rows}_rows"


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    chat = LocalChatModel(prepared_base_model())
    prompts = bench_prompts(args.prompts)
    # Warm-up: loads the model and pays one-off costs outside the timings, for both sides.
    batched_replies(chat, prompts[:2], 4, 2)
    sequential_replies(chat, prompts[:1], 4)
    model, _tokenizer = chat.model_and_tokenizer()
    choice = cpu_matmul.describe_linear_choice(model)
    print(
        f"setup: {time.perf_counter() - started:.1f}s (model in {chat.base_model_dir}, "
        f"device {chat.device}, {torch.get_num_threads()} torch threads for every side); "
        f"batched products: {choice}; {openmp_waiting().describe()}"
    )

    def run_batched() -> list[str]:
        return batched_replies(chat, prompts, args.max_new_tokens, args.batch_size)

    def run_batched_torch_linear() -> list[str]:
        with mock.patch.object(cpu_matmul, "onednn_min_rows", return_value=None):
            return run_batched()

    def run_batched_onednn() -> list[str]:
        with mock.patch.object(cpu_matmul, "onednn_min_rows", return_value=2):
            return run_batched()

    def run_batched_bf16() -> list[str]:
        with mock.patch.dict(os.environ, {GENERATION_PRECISION_SETTING: "bf16"}):
            return run_batched()

    def run_sequential() -> list[str]:
        return sequential_replies(chat, prompts, args.max_new_tokens)

    sides: list[tuple[str, Callable[[], list[str]]]] = [
        ("batched", run_batched),
        ("batched, torch linear", run_batched_torch_linear),
        ("batched, oneDNN linear", run_batched_onednn),
        ("batched, bf16", run_batched_bf16),
        ("sequential", run_sequential),
    ]
    times, replies = time_sides(sides, args.repeats)
    # Each repeat's own ratio, its two sides run back to back, varies less with drifting load.
    ratios = sorted(s / b for s, b in zip(times["sequential"], times["batched"], strict=True))

    same = 0
    for index, sequential in enumerate(replies["sequential"]):
        batched = [replies[name][index] for name, _ in sides if name not in INEXACT_SIDES]
        if batched == [sequential] * len(batched):
            same += 1
        else:
            print(f"prompt {index} differs: batched {batched!r} vs sequential {sequential!r}")

    bf16_same = sum(
        bf16 == sequential
        for bf16, sequential in zip(replies["batched, bf16"], replies["sequential"], strict=True)
    )
    batched_s = statistics.median(times["batched"])
    bf16_s = statistics.median(times["batched, bf16"])
    torch_linear_s = statistics.median(times["batched, torch linear"])
    onednn_s = statistics.median(times["batched, oneDNN linear"])
    sequential_s = statistics.median(times["sequential"])
    speedup = sequential_s / batched_s
    print(
        f"median over {args.repeats} repeats, {args.prompts} prompts, "
        f"max_new_tokens={args.max_new_tokens}: batched (batch {args.batch_size}) "
        f"{batched_s:.2f}s = {args.prompts / batched_s:.2f} examples/s, sequential generate() "
        f"{sequential_s:.2f}s = {args.prompts / sequential_s:.2f} examples/s: {speedup:.1f}x "
        f"(target >= 10x; per repeat {', '.join(f'{r:.1f}x' for r in ratios)}); "
        f"{same}/{args.prompts} replies identical on the four fp32 sides"
    )
    print(
        f"batched with torch's own linear: {torch_linear_s:.2f}s, "
        f"{sequential_s / torch_linear_s:.1f}x over sequential; with oneDNN's: {onednn_s:.2f}s, "
        f"{sequential_s / onednn_s:.1f}x; the measured choice ({choice}) is "
        f"{min(torch_linear_s, onednn_s) / batched_s:.2f}x the faster forced side"
    )
    print(
        f"batched in bf16 ({GENERATION_PRECISION_SETTING}=bf16): {bf16_s:.2f}s, "
        f"{batched_s / bf16_s:.2f}x the fp32 batched side; {bf16_same}/{args.prompts} replies "
        "identical to fp32 sequential generate()"
    )
    figures = {
        "batched_s": f"{batched_s:.3f}",
        "sequential_s": f"{sequential_s:.3f}",
        "batched_eps": f"{args.prompts / batched_s:.3f}",
        "sequential_eps": f"{args.prompts / sequential_s:.3f}",
        "speedup": f"{speedup:.2f}",
        "speedup_min": f"{ratios[0]:.2f}",
        "torch_linear_s": f"{torch_linear_s:.3f}",
        "torch_linear_speedup": f"{sequential_s / torch_linear_s:.2f}",
        "onednn_s": f"{onednn_s:.3f}",
        "onednn_speedup": f"{sequential_s / onednn_s:.2f}",
        "chosen": chosen_products(model),
        "bf16_s": f"{bf16_s:.3f}",
        "bf16_gain": f"{batched_s / bf16_s:.2f}",
        "bf16_same_outputs": f"{bf16_same}/{args.prompts}",
        "batch_size": args.batch_size,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "same_outputs": f"{same}/{args.prompts}",
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
