"""Give the demo a production model the gateway can serve: freeze the demo's approved examples,
train a short LoRA with the local trainer (the real runner, in this process), and promote the
version it registers. Idempotent: nothing is done while the demo's model has a production
version whose adapter is on disk.

The promotion is an admin's override of the gate, with its reason in the alias history: the
demo model is not evaluated (an evaluation of the base model against it is the demo's next
step for a lead, and takes minutes), and a short run is not a good model; it is there so
that `make run` leaves something to call at /v1/.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog.models import BaseModel, Provider
from datasets.models import Dataset
from datasets.services import dataset_version_freeze
from ftportal.models import Project
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import production_version
from registry.services import model_version_promote
from training.models import JobStatus, TrainingJob
from training.runner import training_job_run
from training.services import training_job_create

from .load_demo import DATASET_NAME, PROJECT_NAME

MODEL_NAME = "triage"
# Steps of the short run: the training loss falls from 1.4 to about 0.5 in 4 steps (measured
# on the demo), and a step takes 5 to 20 s on 2 CPU cores (idle to busy). Validation once, at
# the end, and no checkpoint but the final adapter: each costs as much as a step or two.
DEFAULT_STEPS = 4
# A worker of an earlier `make run` may hold the job; how long to wait for it to finish.
WAIT_FOR_WORKER_S = 600


class Command(BaseCommand):
    help = "Train and promote a short LoRA for the demo project, once (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=PROJECT_NAME).first()
        if project is None:
            raise CommandError("No demo project: run `manage.py load_demo` first.")
        served = self._served_version(project)
        if served is not None:
            self.stdout.write(f"Demo production model already present: {served}")
            return
        lead = User.objects.get(username="lead")
        admin = User.objects.get(username="admin")
        base_model = BaseModel.objects.get(provider=Provider.LOCAL, key="smollm2-135m-instruct")
        dataset = Dataset.objects.get(project=project, name=DATASET_NAME)
        with transaction.atomic():
            frozen = dataset.versions.order_by("-number").first() or dataset_version_freeze(
                dataset=dataset, user=lead, note="frozen by load_demo_model"
            )
            job = training_job_create(
                project=project,
                dataset_version=frozen,
                base_model=base_model,
                user=lead,
                hyperparameters={
                    "epochs": 1,
                    "max_steps": options["steps"],
                    "eval_every_steps": options["steps"],
                    "checkpoint_every_steps": 0,
                },
                model_name=MODEL_NAME,
            )
        self.stdout.write(f"Training the demo model ({options['steps']} steps, job {job.pk})...")
        began = time.monotonic()
        # The job is also queued for the worker (training_job_create always dispatches); the
        # first to claim it runs it, the other finds it taken and leaves it.
        if training_job_run(job_id=job.pk) is None:
            self._wait_for(job)
        job.refresh_from_db()
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"The demo's training job {job.pk} ended {job.status}: {job.error}")
        version = ModelVersion.objects.get(training_job=job)
        model_version_promote(
            model_version=version,
            user=admin,
            reason=(
                f"Demo: a {options['steps']}-step LoRA trained by load_demo_model so that the "
                "gateway has a production model to serve; not evaluated."
            ),
            expected_current_version=None,
            override=True,
        )
        self.stdout.write(
            f"Demo production model: {version}, trained in {time.monotonic() - began:.0f} s"
        )

    def _served_version(self, project: Project) -> ModelVersion | None:
        registered = RegisteredModel.objects.filter(project=project, name=MODEL_NAME).first()
        version = production_version(registered) if registered else None
        if version is None or not Path(version.adapter_dir or "/nonexistent").is_dir():
            return None
        return version

    def _wait_for(self, job: TrainingJob) -> None:
        deadline = time.monotonic() + WAIT_FOR_WORKER_S
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.is_finished:
                return
            time.sleep(1)
        raise CommandError(f"The demo's training job {job.pk} did not finish in time.")
