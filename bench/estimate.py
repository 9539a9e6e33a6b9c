"""Does a local job's launch estimate match the time the job takes? Estimated against actual
worker seconds, with the estimate as it was before issue 18 beside it.

    python bench/estimate.py [--labels 56] [--per-label 9] [--max-steps 16]

A many-label intent task (bench/intent_task.py: 56 labels x 9 short messages = 504 examples,
the shape of the issue's job) is frozen with the product's 15 % validation split in a scratch
Postgres database, and SmolLM2-135M-Instruct trains on it through the worker's own code
(``training.runner.training_job_run``, in this process) for ``--max-steps`` steps a job:

1. first job: validation every 5 and a checkpoint every 10 steps (the defaults before issue 18,
   typed in by the lead); no job has finished on this machine yet, so the speeds are the first
   guess (FTPORTAL_LOCAL_TOKENS_PER_SECOND and the measured constants);
2. the same job again: now corrected by the speeds the first one measured on this machine;
3. the intervals left unset, so scaled to the data (``providers.base.default_intervals``).

For each job: the estimate (``training.estimates.launch_estimate``) with its range, the old
estimate (training tokens over the median training speed of the last finished local jobs, else
FTPORTAL_LOCAL_TOKENS_PER_SECOND: validation passes, checkpoint saves and loading left out),
and the actual worker seconds of the job (``TrainingJob.compute_seconds``, what its cost is
priced on). The last line is key=value, for the second job (the measured estimate of the
issue's settings) and the third (job3_*).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.databases import in_scratch_django_database  # noqa: E402
from bench.intent_task import intent_task  # noqa: E402

SYSTEM = "Name the customer's intent with its label, nothing else."
# The lead's settings of the first two jobs: the defaults before issue 18.
OLD_DEFAULT_INTERVALS = {"eval_every_steps": 5, "checkpoint_every_steps": 10}


@dataclass(frozen=True)
class Outcome:
    name: str
    estimated: float
    low: float
    high: float
    source: str
    old_estimated: float
    actual: float
    validation_passes: int
    eval_every: int

    @property
    def ratio(self) -> float:
        return self.actual / self.estimated

    @property
    def old_ratio(self) -> float:
        return self.actual / self.old_estimated

    @property
    def in_range(self) -> bool:
        return self.low <= self.actual <= self.high


def old_estimate_seconds(training_tokens: int, base_model: Any) -> float:
    """The time estimate before issue 18: training tokens over the median speed of the last 5
    finished local jobs of the base model (any machine), else the configured first guess."""
    from django.conf import settings

    from training.models import JobStatus, TrainingJob

    speeds = [
        speed
        for speed in TrainingJob.objects.filter(
            base_model=base_model, status=JobStatus.SUCCEEDED, tokens_per_second__gt=0
        )
        .order_by("-finished_at")
        .values_list("tokens_per_second", flat=True)[:5]
        if speed
    ]
    speed = statistics.median(speeds) if speeds else settings.FTPORTAL_LOCAL_TOKENS_PER_SECOND
    return training_tokens / speed


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from unittest import mock

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    from bench.prepare import prepared_base_model
    from catalog.models import BaseModel, Provider
    from datasets.models import Dataset, Example, ExampleStatus
    from datasets.services import dataset_version_freeze
    from ftportal.heartbeat import worker_presence_record
    from ftportal.models import Project
    from training import runner, services
    from training.estimates import SPEEDS_EVENT_ID, launch_estimate
    from training.hyperparameters import config_for
    from training.services import training_job_create

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    prepared_base_model()
    user = User.objects.create_user(username="bench")
    project = Project.objects.create(name="bench")
    dataset = Dataset.objects.create(project=project, name="intents")
    examples, _ = intent_task(train_per_label=args.per_label, test_per_label=0, labels=args.labels)
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": example.text},
                {"role": "assistant", "content": example.label},
            ],
            status=ExampleStatus.APPROVED,
        )
        for example in examples
    )
    version = dataset_version_freeze(
        dataset=dataset,
        user=user,
        validation_fraction=0.15,
        # Messages generated from shared phrasings are near duplicates by design.
        overlap_override_reason="bench: generated from shared phrasings",
    )
    base_model = BaseModel.objects.get(provider=Provider.LOCAL, key="smollm2-135m-instruct")
    # This process is the worker: its machine serves the training queue.
    worker_presence_record(
        name=f"bench@{socket.gethostname()}:{os.getpid()}",
        hostname=f"bench@{socket.gethostname()}",
        pid=os.getpid(),
        queues=["training"],
        now=timezone.now(),
    )
    print(
        f"{len(examples)} examples, {args.labels} labels; prepared in "
        f"{time.perf_counter() - started:.0f} s (not timed); load {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    jobs = [
        ("first_guess_old_intervals", OLD_DEFAULT_INTERVALS),
        ("measured_old_intervals", OLD_DEFAULT_INTERVALS),
        ("measured_scaled_intervals", {}),
    ]
    outcomes: list[Outcome] = []
    for name, intervals in jobs:
        hyperparameters = {"max_steps": args.max_steps, **intervals}
        stored = config_for(base_model.provider, hyperparameters)
        estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
        assert estimate.time is not None and estimate.seconds is not None
        old = old_estimate_seconds(estimate.training_tokens, base_model)
        # The bench runs the job here; nothing is sent to a worker listening on the broker.
        with mock.patch.object(services, "dispatch"):
            job = training_job_create(
                project=project,
                dataset_version=version,
                base_model=base_model,
                user=user,
                hyperparameters=hyperparameters,
            )
        runner.training_job_run(job_id=job.pk)
        job.refresh_from_db()
        if job.status != "succeeded":
            raise SystemExit(f"job {name} {job.status}: {job.error}")
        outcome = Outcome(
            name=name,
            estimated=estimate.seconds,
            low=estimate.time.low_seconds,
            high=estimate.time.high_seconds,
            source=estimate.time.speed_source,
            old_estimated=old,
            actual=job.compute_seconds,
            validation_passes=estimate.time.validation_passes,
            eval_every=job.hyperparameters["eval_every_steps"],
        )
        outcomes.append(outcome)
        print(
            f"{name}: {job.total_steps} steps, validation every {outcome.eval_every} steps "
            f"({outcome.validation_passes} passes); estimated {outcome.estimated:.0f} s "
            f"({outcome.low:.0f} to {outcome.high:.0f}, {outcome.source}), old estimate "
            f"{outcome.old_estimated:.0f} s, actual {outcome.actual:.0f} s: ratio "
            f"{outcome.ratio:.2f} (old {outcome.old_ratio:.2f}), in range {outcome.in_range}; "
            f"{job.tokens_per_second:.0f} training tokens/s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        print(f"  estimate's speeds: {estimate.time.basis}", flush=True)
        recorded = job.events.filter(provider_event_id=SPEEDS_EVENT_ID).first()
        print(f"  the job's: {recorded.message if recorded else 'none recorded'}", flush=True)

    _, measured, scaled = outcomes
    print(
        f"estimated_s={measured.estimated:.1f} actual_s={measured.actual:.1f} "
        f"ratio={measured.ratio:.3f} old_estimated_s={measured.old_estimated:.1f} "
        f"old_ratio={measured.old_ratio:.3f} in_range={int(measured.in_range)} "
        f"first_guess_ratio={outcomes[0].ratio:.3f} "
        f"job3_estimated_s={scaled.estimated:.1f} job3_actual_s={scaled.actual:.1f} "
        f"job3_ratio={scaled.ratio:.3f} job3_old_ratio={scaled.old_ratio:.3f} "
        f"job3_in_range={int(scaled.in_range)} job3_eval_every={scaled.eval_every}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=56)
    parser.add_argument("--per-label", type=int, default=9)
    parser.add_argument("--max-steps", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as artifacts:
        # Adapters and checkpoints of the bench's jobs go away with it.
        os.environ["FTPORTAL_ARTIFACTS_DIR"] = artifacts
        in_scratch_django_database("ftportal_bench_estimate", lambda: run(args))


if __name__ == "__main__":
    main()
