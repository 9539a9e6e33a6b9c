"""Does the local model server's dynamic batching pay? The server batching concurrent requests
against the same server answering one request at a time, same prompts, same clients.

    python bench/serving_local.py [--requests 48] [--clients 16] [--max-tokens 24] [--repeats 2]

Both sides are the real thing: ``python -m providers.local.serve`` in its own process (the
embedded SmolLM2-135M-Instruct with a LoRA adapter loaded through ``/v1/load_lora_adapter``),
reached over HTTP by ``--clients`` concurrent client threads, each sending the next of the
demo's tickets to ``/v1/chat/completions`` until ``--requests`` are answered. Batched: the
server's default window (25 ms, ``--window-ms``) and batches of up to 16; single: window 0,
batches of 1. One server runs at a time, so neither competes with the other for the cores.
Decoding is greedy, so every answer must be the same on both sides (checked). The last line is
machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.prepare import model_cache_dir, prepared_base_model  # noqa: E402
from providers.local.model_server import DEFAULT_WINDOW_MS  # noqa: E402

DEMO_FILE = REPO / "config" / "demo" / "support_triage.jsonl"
ADAPTER = "bench-adapter"
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class Side:
    name: str
    window_ms: float
    max_batch: int


BATCHED = Side("batched", window_ms=DEFAULT_WINDOW_MS, max_batch=16)
SINGLE = Side("single", window_ms=0.0, max_batch=1)


@dataclass(frozen=True)
class Run:
    seconds: float
    latencies: list[float]
    answers: list[str]
    metrics: dict[str, object]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(side: Side, adapter_root: Path) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "providers.local.serve", "--port", str(port),
        "--model-cache", str(model_cache_dir()), "--adapter-root", str(adapter_root),
        "--window-ms", str(side.window_ms), "--max-batch", str(side.max_batch),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the {side.name} server exited ({process.returncode})")
            try:
                if requests.get(f"{origin}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {side.name} server did not start")
            time.sleep(0.2)
        yield origin
    finally:
        process.terminate()
        process.wait(timeout=30)


def untrained_adapter(base_dir: Path, directory: Path) -> Path:
    """A LoRA adapter as training starts one; it goes through the same loading and merging as
    a trained one, which is what the server's path costs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.float32, local_files_only=True
    )
    lora = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora.save_pretrained(str(directory))
    return directory


def demo_prompts() -> list[list[dict[str, str]]]:
    conversations = [json.loads(line)["messages"] for line in DEMO_FILE.read_text().splitlines()]
    return [conversation[:-1] for conversation in conversations]


def drive(origin: str, prompts: list[list[dict[str, str]]], clients: int, max_tokens: int) -> Run:
    answers: list[str] = [""] * len(prompts)
    latencies: list[float] = [0.0] * len(prompts)
    next_index = iter(range(len(prompts)))
    taking = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        with requests.Session() as http:
            while True:
                with taking:
                    index = next(next_index, None)
                if index is None:
                    return
                began = time.perf_counter()
                reply = http.post(
                    f"{origin}/v1/chat/completions",
                    json={"model": ADAPTER, "messages": prompts[index], "max_tokens": max_tokens},
                    timeout=600,
                )
                latencies[index] = time.perf_counter() - began
                if reply.status_code != 200:
                    failures.append(reply.text)
                    return
                answers[index] = reply.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"requests failed: {failures[:3]}")
    metrics = requests.get(f"{origin}/metrics", timeout=10).json()
    return Run(seconds, latencies, answers, metrics)


def run_side(side: Side, adapter_root: Path, adapter: Path, args: argparse.Namespace) -> list[Run]:
    prompts = demo_prompts()
    prompts = [prompts[i % len(prompts)] for i in range(args.requests)]
    with running_server(side, adapter_root) as origin:
        loaded = requests.post(
            f"{origin}/v1/load_lora_adapter",
            json={"lora_name": ADAPTER, "lora_path": str(adapter)},
            timeout=120,
        )
        loaded.raise_for_status()
        # One warm-up request: the first decode pays for oneDNN's kernel choices.
        drive(origin, prompts[:1], 1, args.max_tokens)
        runs = [drive(origin, prompts, args.clients, args.max_tokens)]
    for run in runs:
        print(
            f"{side.name}: {args.requests} requests in {run.seconds:.2f}s = "
            f"{args.requests / run.seconds:.2f} req/s, p50 latency "
            f"{statistics.median(run.latencies) * 1000:.0f} ms; server: {run.metrics}"
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--window-ms", type=float, default=BATCHED.window_ms)
    args = parser.parse_args()
    batched_side = Side("batched", window_ms=args.window_ms, max_batch=BATCHED.max_batch)

    base_dir = prepared_base_model()
    with tempfile.TemporaryDirectory(prefix="serving-local-") as scratch:
        root = Path(scratch)
        adapter = untrained_adapter(base_dir, root / "adapter")
        single: list[Run] = []
        batched: list[Run] = []
        # The sides alternate, one server start each, so that a change in what else runs on
        # the machine weighs on both alike rather than on whichever side ran first.
        for _ in range(args.repeats):
            single += run_side(SINGLE, root, adapter, args)
            batched += run_side(batched_side, root, adapter, args)

    rps_single = statistics.median(args.requests / run.seconds for run in single)
    rps_batched = statistics.median(args.requests / run.seconds for run in batched)
    p50_single = statistics.median(statistics.median(run.latencies) for run in single)
    p50_batched = statistics.median(statistics.median(run.latencies) for run in batched)
    reference = single[0].answers
    same = sum(
        all(run.answers[i] == reference[i] for run in [*single, *batched])
        for i in range(args.requests)
    )
    speedup = rps_batched / rps_single
    # Each repeat's own ratio: its two sides ran back to back, under the same load.
    ratios = sorted(
        (args.requests / b.seconds) / (args.requests / s.seconds)
        for s, b in zip(single, batched, strict=True)
    )
    mean_batch = statistics.median(
        int(str(run.metrics["requests"])) / max(int(str(run.metrics["batches"])), 1)
        for run in batched
    )
    print(
        f"dynamic batching: {rps_batched:.2f} req/s against {rps_single:.2f} one at a time: "
        f"{speedup:.1f}x (target >= 5x); p50 latency {p50_batched * 1000:.0f} ms against "
        f"{p50_single * 1000:.0f} ms; {same}/{args.requests} answers identical on every run; "
        f"per repeat {', '.join(f'{ratio:.1f}x' for ratio in ratios)}"
    )
    figures = {
        "speedup": f"{speedup:.2f}",
        "speedup_min": f"{ratios[0]:.2f}",
        "requests": args.requests,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "window_ms": f"{args.window_ms:g}",
        "repeats": args.repeats,
        "rps_batched": f"{rps_batched:.3f}",
        "rps_single": f"{rps_single:.3f}",
        "p50_batched_ms": f"{p50_batched * 1000:.1f}",
        "p50_single_ms": f"{p50_single * 1000:.1f}",
        "mean_batch_size": f"{mean_batch:.1f}",
        "same_outputs": f"{same}/{args.requests}",
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
