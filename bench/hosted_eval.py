"""Concurrent hosted-chat evaluation against the fake OpenAI-compatible server, in one run:

    python bench/hosted_eval.py [--requests 1000] [--max-in-flight 50] [--delay 0.2]

The fake answers each request after ``--delay`` seconds. It runs in a process of its own, as a
real provider would, so the client measured does not share a GIL with the server's threads, and
it keeps connections alive between requests, as real providers do (with a new connection and
server thread for every request, the client spent twice the CPU per request: 1.8 ms against
0.9 ms).
Rate limits (429, Retry-After: 1) and server errors (500) are injected at the start and twice
more along the way, when a third and two thirds of the items are done, so retries happen while
other requests are in flight. Two phases, each against a fresh fake:

1. adapter: OpenAICompatibleChat.generate_many on its own; the injections come from on_result.
2. evaluation run: the same items as a Dataset frozen into a DatasetVersion, evaluated by the
   product's runner (evaluation.runner.eval_run_execute, called in this process instead of by
   the Celery worker) with one OpenAI-compatible candidate, so every answer is scored and
   stored in the database as it arrives. The database is a throwaway SQLite file in a temporary
   directory (the default single-machine setup), with DEBUG off as on a deployed worker
   (DJANGO_DEBUG=1 in the environment turns it on) and logging at WARNING (LOG_LEVEL=INFO logs
   every request, as a worker does by default). The runner owns on_result, so a thread watches
   the fake's count of answers sent and injects when it reaches a third and two thirds. (Counting
   the answers the runner has stored instead would inject too late: its stores lag the answers,
   and by a third stored every request had been sent.) Half the references are the fake's
   echo, so the candidate's exact match must be 0.5.

The baseline is max_in_flight=1 (what a plain loop over the items does) over a sample of
``--baseline-sample`` requests without injected failures, extrapolated linearly to
``--requests``: running all of them one at a time would take minutes. Both phases are compared
with it, and the runner with the adapter (runner_overhead: phase 2 time / phase 1 time).
The last line is machine-readable. A run that lost or repeated an answer, stored or scored an
item other than once, exceeded the limit or did not succeed exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))

from fakes.chat_servers import CONTROL_PATH, DEFAULT_API_KEY, expected_answer  # noqa: E402
from providers.base import ChatResult, Conversation  # noqa: E402
from providers.hosted_chat import OpenAICompatibleChat  # noqa: E402

MODEL = "bench-model"
# The environment variable the bench's registered endpoint names for its key, as an admin would.
KEY_ENV = "BENCH_HOSTED_EVAL_KEY"
MAX_NEW_TOKENS = 16
# (429s, 500s) injected at the start, then again when these fractions of the items are done.
FAILURES_PER_INJECTION = (6, 6)
INJECT_AT_FRACTIONS = (1 / 3, 2 / 3)


def item_text(index: int) -> str:
    # Distinct text per item: the fake counts answers per item by its last user message.
    return f"evaluation item {index}"


def conversations(count: int) -> list[Conversation]:
    return [[{"role": "user", "content": item_text(index)}] for index in range(count)]


def answered_once(stats: dict[str, Any], requests: int) -> int:
    answers = Counter(stats["answers_by_item"])
    return sum(1 for index in range(requests) if answers[item_text(index)] == 1)


class FakeProcess:
    """The fake OpenAI-compatible server in a child process, driven over its control URL."""

    def __init__(self, delay: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fakes.chat_servers", str(delay)],
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


class InjectWhenAnswered:
    """Injects failures when a third and two thirds of the answers have come in, from the
    thread that collects them (as phase 1 does from on_result), by wrapping the runner's
    answer buffer. Also notes when the last answer came in (``all_answered_at``,
    time.perf_counter()), so what the runner does after the network is done shows."""

    def __init__(self, fake: FakeProcess, requests: int) -> None:
        from evaluation import runner

        self._fake = fake
        self._requests = requests
        self._inject_at = {round(requests * fraction) for fraction in INJECT_AT_FRACTIONS}
        self._received = 0
        self.all_answered_at: float | None = None
        self._add = runner._WrittenInBatches.add
        self._patch = mock.patch.object(runner._WrittenInBatches, "add", self._counting_add())

    def _counting_add(self) -> Any:
        watcher, add = self, self._add

        def counting_add(buffer: Any, row: Any) -> None:
            add(buffer, row)
            watcher._received += 1
            if watcher._received in watcher._inject_at:
                inject_failures(watcher._fake)
            if watcher._received == watcher._requests:
                watcher.all_answered_at = time.perf_counter()

        return counting_add

    def __enter__(self) -> InjectWhenAnswered:
        self._patch.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._patch.stop()


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
) -> tuple[float, dict[str, Any], list[ChatResult]]:
    items = conversations(requests)
    inject_after = {round(requests * fraction) for fraction in INJECT_AT_FRACTIONS}
    finished = 0
    with FakeProcess(delay) as fake:

        def on_result(index: int, generation: ChatResult) -> None:
            nonlocal finished
            finished += 1
            if finished in inject_after:
                inject_failures(fake)

        chat = chat_for(fake, max_in_flight)
        inject_failures(fake)
        started = time.perf_counter()
        generations = chat.generate_many(items, max_new_tokens=MAX_NEW_TOKENS, on_result=on_result)
        seconds = time.perf_counter() - started
        chat.close()
        stats = fake.stats()
    return seconds, stats, generations


def baseline_run(sample: int, delay: float) -> float:
    with FakeProcess(delay) as fake:
        chat = chat_for(fake, 1)
        started = time.perf_counter()
        chat.generate_many(conversations(sample), max_new_tokens=MAX_NEW_TOKENS)
        seconds = time.perf_counter() - started
        chat.close()
    return seconds


@dataclass(frozen=True)
class RunOutcome:
    """What phase 2 measured and found in the database."""

    seconds: float  # eval_run_execute, from the claim to the report
    answering_seconds: float  # the runner's own generation_seconds: the concurrent part
    after_answers_seconds: float  # from the fake's last answer to the end of the run
    stats: dict[str, Any]
    status: str
    error: str  # the run's error, when it failed
    results: int  # EvalResult rows of the run
    distinct_items: int  # items with a stored result
    failed: int  # results stored as refused by the provider
    exact_match: float | None
    setup_seconds: float  # migrate and the data set: not timed


def configure_django(directory: str, max_in_flight: int) -> None:
    """Settings for a throwaway SQLite database in ``directory``; read at django.setup()."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ["FTPORTAL_VAR_DIR"] = directory
    os.environ["CELERY_BROKER_URL"] = "filesystem://"  # never used: the dispatch is patched out
    os.environ["FTPORTAL_EVAL_MAX_IN_FLIGHT"] = str(max_in_flight)
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-throwaway-key")
    os.environ[KEY_ENV] = DEFAULT_API_KEY
    os.environ["FTPORTAL_SECRET_ENVS"] = KEY_ENV
    import django

    django.setup()


def reference_for(index: int) -> str:
    # The fake's echo for the even items only: a correct candidate scores exact match 0.5.
    return expected_answer(item_text(index)) if index % 2 == 0 else f"not the echo of {index}"


def evaluation_run(requests: int, delay: float) -> RunOutcome:
    """The items through the product's evaluation runner; Django must be configured."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from catalog.models import EndpointKind
    from catalog.services import endpoint_register
    from datasets.models import Dataset, Example, ExampleStatus
    from datasets.services import dataset_version_freeze
    from evaluation import runner, services
    from evaluation.models import CandidateKind, EvalResult, EvalSplit
    from evaluation.services import CandidateSpec, eval_run_create
    from ftportal.models import Project

    began = time.perf_counter()
    call_command("migrate", verbosity=0)
    user = User.objects.create_user(username="bench")
    project = Project.objects.create(name="hosted eval bench")
    dataset = Dataset.objects.create(project=project, name="hosted eval bench")
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=ExampleStatus.APPROVED,
            messages=[
                {"role": "user", "content": item_text(index)},
                {"role": "assistant", "content": reference_for(index)},
            ],
        )
        for index in range(requests)
    )
    version = dataset_version_freeze(dataset=dataset, user=user)
    setup_seconds = time.perf_counter() - began

    with FakeProcess(delay) as fake:
        spec = CandidateSpec(
            kind=CandidateKind.OPENAI_COMPATIBLE,
            api_model=MODEL,
            endpoint=endpoint_register(
                name="bench-fake",
                kind=EndpointKind.OPENAI_COMPATIBLE,
                base_url=fake.base_url,
                secret_env=KEY_ENV,
            ),
        )
        # eval_run_create queues the run for the Celery worker on commit; this process is the
        # worker here.
        with mock.patch.object(services, "eval_run_dispatch", lambda run: None):
            run = eval_run_create(
                project=project,
                dataset_version=version,
                candidates=[spec],
                user=user,
                split=EvalSplit.ALL,
                max_new_tokens=MAX_NEW_TOKENS,
            )
        inject_failures(fake)
        with InjectWhenAnswered(fake, requests) as watcher:
            started = time.perf_counter()
            runner.eval_run_execute(run_id=run.pk)
            finished = time.perf_counter()
        stats = fake.stats()
    seconds = finished - started
    # The runner finished after the fake's last answer by this much: storing the backlog of
    # answers, then the summary and the report.
    after_answers = finished - (watcher.all_answered_at or finished)

    run.refresh_from_db()
    candidate = run.candidates.get()
    results = EvalResult.objects.filter(candidate__run=run)
    means = candidate.metrics.get("means", {})
    return RunOutcome(
        seconds=seconds,
        answering_seconds=candidate.generation_seconds or 0.0,
        after_answers_seconds=after_answers,
        stats=stats,
        status=str(run.status),
        error=run.error,
        results=results.count(),
        distinct_items=results.values("item_id").distinct().count(),
        failed=results.exclude(error="").count(),
        exact_match=means.get("exact_match"),
        setup_seconds=setup_seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--baseline-sample", type=int, default=25)
    args = parser.parse_args()
    injected = (1 + len(INJECT_AT_FRACTIONS)) * sum(FAILURES_PER_INJECTION)

    seconds, stats, generations = concurrent_run(args.requests, args.max_in_flight, args.delay)
    once = answered_once(stats, args.requests)
    max_seen = int(stats["max_in_flight_seen"])
    sent = int(stats["total_requests"])
    retries = sum(g.attempts - 1 for g in generations)

    with tempfile.TemporaryDirectory(prefix="ftportal-hosted-eval-") as directory:
        configure_django(directory, args.max_in_flight)
        outcome = evaluation_run(args.requests, args.delay)
        from django.db import connections

        connections.close_all()  # before the directory and its database go
    run_once = answered_once(outcome.stats, args.requests)
    run_max_seen = int(outcome.stats["max_in_flight_seen"])
    run_sent = int(outcome.stats["total_requests"])
    exact_match = outcome.exact_match if outcome.exact_match is not None else float("nan")

    sample_seconds = baseline_run(args.baseline_sample, args.delay)
    baseline_seconds = sample_seconds * args.requests / args.baseline_sample
    speedup = baseline_seconds / seconds
    run_speedup = baseline_seconds / outcome.seconds
    overhead = outcome.seconds / seconds

    print(
        f"{args.requests} requests, max_in_flight={args.max_in_flight}, "
        f"{args.delay * 1000:.0f} ms per answer, {injected} failures injected per phase (429 "
        "with Retry-After: 1, and 500)"
    )
    print("phase 1, adapter: OpenAICompatibleChat.generate_many")
    print(f"  wall time               {seconds:8.2f} s  (target under 10 s)")
    print(f"  max in flight observed  {max_seen:8d}    (limit {args.max_in_flight})")
    print(f"  answered exactly once   {once:8d}    of {args.requests}")
    print(f"  requests sent           {sent:8d}    ({retries} retries)")
    print("phase 2, evaluation run: evaluation.runner.eval_run_execute, SQLite")
    print(f"  wall time               {outcome.seconds:8.2f} s  (target under 10 s)")
    print(f"    answering and storing {outcome.answering_seconds:8.2f} s")
    print(
        f"    the rest (claim, summary, report) {outcome.seconds - outcome.answering_seconds:.2f} s"
    )
    print(
        f"    after the last answer {outcome.after_answers_seconds:8.2f} s  (stores still "
        "pending, summary, report)"
    )
    print(f"  max in flight observed  {run_max_seen:8d}    (limit {args.max_in_flight})")
    print(f"  answered exactly once   {run_once:8d}    of {args.requests}")
    print(f"  requests sent           {run_sent:8d}    ({run_sent - args.requests} retries)")
    print(
        f"  results stored          {outcome.results:8d}    ({outcome.distinct_items} distinct "
        f"items, {outcome.failed} failed)"
    )
    print(f"  run status              {outcome.status:>8s}    {outcome.error}")
    print(f"  exact match             {exact_match:8.3f}    (expected 0.500)")
    print(f"  setup, not timed        {outcome.setup_seconds:8.2f} s  (migrate, data set)")
    print(
        f"baseline: max_in_flight=1 over {args.baseline_sample} requests took "
        f"{sample_seconds:.2f} s, extrapolated to {args.requests}: {baseline_seconds:.1f} s"
    )
    print(f"  speedup, adapter        {speedup:8.1f}x")
    print(f"  speedup, evaluation run {run_speedup:8.1f}x")
    print(f"  runner overhead         {overhead:8.2f}x  (phase 2 time / phase 1 time)")
    print(
        f"requests={args.requests} max_in_flight={args.max_in_flight} "
        f"wall_s={seconds:.2f} max_in_flight_seen={max_seen} "
        f"answered_once={once} requests_sent={sent} "
        f"retries={retries} baseline_s_extrapolated={baseline_seconds:.1f} "
        f"speedup={speedup:.1f} run_wall_s={outcome.seconds:.2f} "
        f"run_max_in_flight_seen={run_max_seen} run_answered_once={run_once} "
        f"run_requests_sent={run_sent} run_results={outcome.results} "
        f"run_scored_once={outcome.distinct_items} run_failed={outcome.failed} "
        f"run_status={outcome.status} run_exact_match={exact_match:.3f} "
        f"run_after_answers_s={outcome.after_answers_seconds:.2f} "
        f"run_speedup={run_speedup:.1f} runner_overhead={overhead:.2f}"
    )
    # A fast run that lost or repeated answers, or exceeded the limit, is a failed run; so is an
    # evaluation run that did not store and score every item once.
    run_ok = (
        outcome.status == "succeeded"
        and run_once == args.requests
        and outcome.results == args.requests
        and outcome.distinct_items == args.requests
        and outcome.failed == 0
        and exact_match == 0.5
        and run_max_seen <= args.max_in_flight
    )
    if once != args.requests or max_seen > args.max_in_flight or not run_ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
