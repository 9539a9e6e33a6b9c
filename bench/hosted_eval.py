"""Concurrent hosted-chat evaluation against the fake OpenAI-compatible server, in one run:

    python bench/hosted_eval.py [--requests 1000] [--max-in-flight 50] [--delay 0.2]

The fake answers each request after ``--delay`` seconds. It runs in a process of its own, as a
real provider would, so the client measured does not share a GIL with the server's threads.
Rate limits (429, Retry-After: 1) and server errors (500) are injected at the start and twice
more along the way (from on_result), so retries happen while other requests are in flight.

The baseline is max_in_flight=1 (what a plain loop over the items does) over a sample of
``--baseline-sample`` requests without injected failures, extrapolated linearly to
``--requests``: running all of them one at a time would take minutes.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))

from providers.base import Conversation  # noqa: E402
from providers.hosted_chat import HostedGeneration, OpenAICompatibleChat  # noqa: E402
from tests.fakes.chat_servers import CONTROL_PATH, DEFAULT_API_KEY  # noqa: E402

MODEL = "bench-model"
# (429s, 500s) injected at the start, then again when these fractions of the items are done.
FAILURES_PER_INJECTION = (6, 6)
INJECT_AT_FRACTIONS = (1 / 3, 2 / 3)


def conversations(count: int) -> list[Conversation]:
    # Distinct text per item: the fake counts answers per item by its last user message.
    return [[{"role": "user", "content": f"evaluation item {index}"}] for index in range(count)]


class FakeProcess:
    """The fake OpenAI-compatible server in a child process, driven over its control URL."""

    def __init__(self, delay: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.chat_servers", str(delay)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        self._control_url = self.base_url.removesuffix("/v1") + CONTROL_PATH

    def __enter__(self) -> FakeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # the child stops when its stdin closes
        self._process.wait(timeout=10)

    def fail_next_requests(self, count: int, *, status: int, headers: dict[str, str]) -> None:
        command = json.dumps({"count": count, "status": status, "headers": headers}).encode()
        request = urllib.request.Request(self._control_url, data=command, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self._control_url, timeout=10) as response:
            stats: dict[str, Any] = json.load(response)
        return stats


def inject_failures(fake: FakeProcess) -> None:
    rate_limited, server_errors = FAILURES_PER_INJECTION
    fake.fail_next_requests(rate_limited, status=429, headers={"Retry-After": "1"})
    fake.fail_next_requests(server_errors, status=500, headers={})


def chat_for(fake: FakeProcess, max_in_flight: int) -> OpenAICompatibleChat:
    return OpenAICompatibleChat(
        api_key=DEFAULT_API_KEY,
        model=MODEL,
        base_url=fake.base_url,
        timeout=30.0,
        max_in_flight=max_in_flight,
    )


def concurrent_run(
    requests: int, max_in_flight: int, delay: float
) -> tuple[float, dict[str, Any], list[HostedGeneration]]:
    items = conversations(requests)
    inject_after = {round(requests * fraction) for fraction in INJECT_AT_FRACTIONS}
    finished = 0
    with FakeProcess(delay) as fake:

        def on_result(index: int, generation: HostedGeneration) -> None:
            nonlocal finished
            finished += 1
            if finished in inject_after:
                inject_failures(fake)

        chat = chat_for(fake, max_in_flight)
        inject_failures(fake)
        started = time.perf_counter()
        generations = chat.generate_many(items, max_new_tokens=16, on_result=on_result)
        seconds = time.perf_counter() - started
        chat.close()
        stats = fake.stats()
    return seconds, stats, generations


def baseline_run(sample: int, delay: float) -> float:
    with FakeProcess(delay) as fake:
        chat = chat_for(fake, 1)
        started = time.perf_counter()
        chat.generate_many(conversations(sample), max_new_tokens=16)
        seconds = time.perf_counter() - started
        chat.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--baseline-sample", type=int, default=25)
    args = parser.parse_args()

    seconds, stats, generations = concurrent_run(args.requests, args.max_in_flight, args.delay)
    answers = Counter(stats["answers_by_item"])
    expected_items = {item[-1]["content"] for item in conversations(args.requests)}
    answered_once = sum(1 for item in expected_items if answers[item] == 1)
    max_seen = int(stats["max_in_flight_seen"])
    sent = int(stats["total_requests"])
    injected = (1 + len(INJECT_AT_FRACTIONS)) * sum(FAILURES_PER_INJECTION)
    retries = sum(g.attempts - 1 for g in generations)

    sample_seconds = baseline_run(args.baseline_sample, args.delay)
    baseline_seconds = sample_seconds * args.requests / args.baseline_sample
    speedup = baseline_seconds / seconds

    print(
        f"concurrent: {args.requests} requests, max_in_flight={args.max_in_flight}, "
        f"{args.delay * 1000:.0f} ms per answer, {injected} failures injected (429 with "
        "Retry-After: 1, and 500)"
    )
    print(f"  wall time               {seconds:8.2f} s  (target under 10 s)")
    print(f"  max in flight observed  {max_seen:8d}    (limit {args.max_in_flight})")
    print(f"  answered exactly once   {answered_once:8d}    of {args.requests}")
    print(f"  requests sent           {sent:8d}    ({retries} retries)")
    print(
        f"baseline: max_in_flight=1 over {args.baseline_sample} requests took "
        f"{sample_seconds:.2f} s, extrapolated to {args.requests}: {baseline_seconds:.1f} s"
    )
    print(f"  speedup                 {speedup:8.1f}x")
    print(
        f"requests={args.requests} max_in_flight={args.max_in_flight} "
        f"wall_s={seconds:.2f} max_in_flight_seen={max_seen} "
        f"answered_once={answered_once} requests_sent={sent} "
        f"retries={retries} baseline_s_extrapolated={baseline_seconds:.1f} "
        f"speedup={speedup:.1f}"
    )
    # A fast run that lost or repeated answers, or exceeded the limit, is a failed run.
    if answered_once != args.requests or max_seen > args.max_in_flight:
        sys.exit(1)


if __name__ == "__main__":
    main()
