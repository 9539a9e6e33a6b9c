"""Fixtures that page tests in several app folders share. A test module imports the ones it asks
for by their function names (`from tests.pages.fixtures import page_world_fixture  # noqa: F401`
gives it `world`), as it imports the fakes' fixtures, so that each module says which world it
reads: the API tests' `world` is another one (tests/api/fixtures.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from evaluation.models import EvalRun
from ftportal.models import Project
from registry.models import RegisteredModel
from registry.services import model_version_promote
from tests.factories import finished_evaluation, production_number
from tests.pages.builders import XSS, World, chat, world_job, world_model_version
from training.models import Checkpoint, JobStatus


@pytest.fixture(name="world")
def page_world_fixture(
    project: Project, dataset: Dataset, base_model: BaseModel, lead: User
) -> World:
    pending = Example.objects.create(dataset=dataset, messages=chat("Where is my invoice?", "{}"))
    for n in range(4):
        Example.objects.create(
            dataset=dataset,
            messages=chat(f"Ticket {n}: the app crashes", '{"category": "bug"}'),
            status=ExampleStatus.APPROVED,
        )
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.15)
    parts = {"project": project, "version": version, "base_model": base_model, "user": lead}
    running = world_job(parts, JobStatus.RUNNING, step=1, total_steps=3)
    Checkpoint.objects.create(job=running, step=1, path="/nowhere/step-1", train_loss=2.0)
    registered = RegisteredModel.objects.create(project=project, name="tickets-ft")
    v1 = world_model_version(
        registered, 1, world_job(parts, JobStatus.SUCCEEDED, step=3, total_steps=3)
    )
    v2 = world_model_version(
        registered, 2, world_job(parts, JobStatus.SUCCEEDED, step=3, total_steps=3)
    )
    # Each promotion with the finished evaluation the gate asks for; v2 after v1, so that a
    # rollback to v1 is possible, and v1 beat v2 later, so promoting v1 again passes the gate.
    items = version.items.count()
    right, wrong = [1.0] * items, [0.0] * items
    for candidate, against in ((v1, None), (v2, v1)):
        finished_evaluation(
            version=candidate, against=against, scores=right, baseline_scores=wrong, user=lead
        )
        model_version_promote(
            model_version=candidate,
            expected_current_version=production_number(candidate.registered_model),
            user=lead,
            reason="better",
        )
    finished_evaluation(version=v1, against=v2, scores=right, baseline_scores=wrong, user=lead)
    # An evaluation still queued, for the cancel button.
    queued_eval = EvalRun.objects.create(project=project, dataset_version=version, created_by=lead)
    return World(
        project, dataset, pending, version, running, registered, v1, v2, base_model, queued_eval
    )


@pytest.fixture(name="hostile_version")
def hostile_version_fixture(dataset: Dataset, lead: User) -> DatasetVersion:
    """A frozen version whose first example carries markup in the question and the answer."""
    Example.objects.create(
        dataset=dataset, messages=chat(f"Help {XSS}", f"{XSS} done"), status=ExampleStatus.APPROVED
    )
    for n in range(9):
        Example.objects.create(
            dataset=dataset, messages=chat(f"Ticket {n}", "{}"), status=ExampleStatus.APPROVED
        )
    return dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.1, seed=1)
