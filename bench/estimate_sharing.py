"""Does the launch estimate hold when the next job's data shares less, or more, of its start
than the jobs it learned from? Estimated against actual worker seconds, with the estimate as it
was before it counted shared starts beside it.

    python bench/estimate_sharing.py [--max-steps 12]

The trainer runs a batch's common start (a system prompt, the chat template's header) once a
row, so a job's speed in tokens a second depends on how much its data shares. Two frozen
versions of the demo's 136 tickets, with the product's 15 % validation split, in a scratch
Postgres database: "shared" as the demo is (one system prompt, 60 of an example's 127 tokens
in common), and "apart", where each ticket's system prompt starts with its own number, so that
nothing is shared. SmolLM2-135M-Instruct trains on them through the worker's own code
(``training.runner.training_job_run``, in this process), ``--max-steps`` steps a job, in this
order: shared (its estimate is the first guess), apart (estimated from the shared job), shared
again (from both).

For each job: the estimate (``training.estimates.launch_estimate``), the old estimate (the same
code, reading the recorded speeds as tokens of the data a second whatever the layout, as it did
before), and the job's actual worker seconds (``TrainingJob.compute_seconds``). The last line is
key=value: the apart job's and the second shared job's ratios, actual over estimated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.databases import in_scratch_django_database  # noqa: E402

DEMO_FILE = REPO / "config" / "demo" / "support_triage.jsonl"


def demo_conversations(*, apart: bool) -> list[list[dict[str, str]]]:
    conversations = [json.loads(line)["messages"] for line in DEMO_FILE.read_text().splitlines()]
    if not apart:
        return conversations
    return [
        [{**c[0], "content": f"Ticket {number}. {c[0]['content']}"}, *c[1:]]
        for number, c in enumerate(conversations)
    ]


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from unittest import mock

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    from bench.prepare import prepared_base_model
    from catalog.models import BaseModel, Provider
    from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
    from datasets.services import dataset_version_freeze
    from ftportal.heartbeat import worker_presence_record
    from ftportal.models import Project
    from training import estimates, runner, services
    from training.estimates import JobSpeeds, launch_estimate
    from training.hyperparameters import config_for
    from training.services import training_job_create

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    prepared_base_model()
    user = User.objects.create_user(username="bench")
    project = Project.objects.create(name="bench")

    def frozen(name: str, *, apart: bool) -> DatasetVersion:
        dataset = Dataset.objects.create(project=project, name=name)
        Example.objects.bulk_create(
            Example(dataset=dataset, messages=messages, status=ExampleStatus.APPROVED)
            for messages in demo_conversations(apart=apart)
        )
        return dataset_version_freeze(dataset=dataset, user=user, validation_fraction=0.15)

    versions = {"shared": frozen("shared", apart=False), "apart": frozen("apart", apart=True)}
    base_model = BaseModel.objects.get(provider=Provider.LOCAL, key="smollm2-135m-instruct")
    worker_presence_record(
        name=f"bench@{socket.gethostname()}:{os.getpid()}",
        hostname=f"bench@{socket.gethostname()}",
        pid=os.getpid(),
        queues=["training"],
        now=timezone.now(),
    )
    print(
        f"prepared in {time.perf_counter() - started:.0f} s (not timed); "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    read_speeds = JobSpeeds.from_text

    def as_before(text: str) -> JobSpeeds | None:
        """The recorded speeds as the estimate read them before: tokens of the data a second."""
        speeds = read_speeds(text)
        if speeds is None:
            return None
        return dataclasses.replace(
            speeds,
            shares_prefix=None,
            training_computed_share=1.0,
            validation_computed_share=1.0,
        )

    hyperparameters: dict[str, Any] = {"max_steps": args.max_steps}
    stored = config_for(base_model.provider, hyperparameters)
    ratios: dict[str, tuple[float, float]] = {}
    for run_number, name in enumerate(("shared", "apart", "shared")):
        version = versions[name]
        estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
        with mock.patch.object(estimates.JobSpeeds, "from_text", staticmethod(as_before)):
            old = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
        assert estimate.seconds is not None and old.seconds is not None
        assert estimate.time is not None
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
        actual = job.compute_seconds
        ratio, old_ratio = actual / estimate.seconds, actual / old.seconds
        print(
            f"job {run_number + 1}, {name}: estimated {estimate.seconds:.0f} s "
            f"({estimate.time.speed_source}), old estimate {old.seconds:.0f} s, actual "
            f"{actual:.0f} s: ratio {ratio:.2f} (old {old_ratio:.2f}); "
            f"{job.tokens_per_second:.0f} training tokens/s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        print(f"  estimate's basis: {estimate.time.basis}", flush=True)
        if run_number:
            ratios[f"{name}{run_number + 1}"] = (ratio, old_ratio)
    print(
        " ".join(
            f"{key}_ratio={ratio:.3f} {key}_old_ratio={old_ratio:.3f}"
            for key, (ratio, old_ratio) in ratios.items()
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as artifacts:
        # Adapters and checkpoints of the bench's jobs go away with it.
        os.environ["FTPORTAL_ARTIFACTS_DIR"] = artifacts
        in_scratch_django_database("ftportal_bench_estimate_sharing", lambda: run(args))


if __name__ == "__main__":
    main()
