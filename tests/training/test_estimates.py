"""The launch estimate of a local job counts what the job will do: its training steps, its
validation passes, its checkpoint saves and loading the model; it learns each part's cost from
the jobs that finished on the machines serving the training queue (what the runner records),
falls back to a first guess, and says which basis it used and its range, on the launch page
and in the API. The launch stores the intervals the estimate counted with."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel, Provider
from datasets.models import DatasetVersion, Split
from datasets.quality.services import counter_or_estimate
from datasets.quality.tokens import count_conversations
from ftportal.models import Project
from ftportal.roles import Role
from providers.base import (
    MEASURED_CPU_COSTS,
    VALIDATION_SHARE,
    CheckpointSaved,
    LocalCosts,
    TrainingProgress,
    TrainingResult,
    step_plan,
)
from tests.api.builders import api, token_client
from tests.factories import finished_job, frozen_version, serving_the_training_queue
from training import runner
from training.estimates import (
    GUESSED_RANGE,
    MEASURED_RANGE,
    SPEEDS_EVENT_ID,
    JobSpeeds,
    LaunchEstimate,
    job_seconds,
    launch_estimate,
)
from training.hyperparameters import config_for, local_config
from training.models import JobEvent, JobStatus
from training.services import training_job_create

pytestmark = pytest.mark.django_db

# 100 tickets, 20 % held out: 80 training examples, 10 steps an epoch at batch 8.
EXAMPLES = 100
TRAINING_MACHINE = "trainer-a"


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=EXAMPLES)


def estimate_of(
    version: DatasetVersion, base_model: BaseModel, **hyperparameters: Any
) -> LaunchEstimate:
    stored = config_for(base_model.provider, hyperparameters)
    return launch_estimate(version=version, base_model=base_model, hyperparameters=stored)


def validation_tokens(version: DatasetVersion, base_model: BaseModel) -> int:
    counter, _ = counter_or_estimate(base_model)
    messages = version.items.filter(split=Split.VALIDATION).values_list("messages", flat=True)
    return int(count_conversations(list(messages), counter).total.sum())


def seconds_at(estimate: LaunchEstimate, costs: LocalCosts, validation: int) -> float:
    assert estimate.time is not None
    return sum(
        job_seconds(
            costs,
            training_tokens=estimate.training_tokens,
            validation_tokens=validation,
            validation_passes=estimate.time.validation_passes,
            saves=estimate.time.checkpoint_saves,
        )
    )


def test_the_time_counts_validation_passes_saves_and_loading(version, base_model):
    estimate = estimate_of(version, base_model)

    time = estimate.time
    assert time is not None and not time.measured
    every = estimate.intervals["eval_every_steps"]
    plan = step_plan(estimate.train_examples, local_config(config_for(Provider.LOCAL, {})))
    assert time.validation_passes == plan.evaluations_after(0, every) >= 1
    checkpoint_every = estimate.intervals["checkpoint_every_steps"]
    assert time.checkpoint_saves == plan.checkpoints(checkpoint_every) + 1  # and the final adapter
    speed = settings.FTPORTAL_LOCAL_TOKENS_PER_SECOND
    ratio = MEASURED_CPU_COSTS.validation_cost_ratio
    validation = validation_tokens(version, base_model)
    assert time.training_seconds == pytest.approx(estimate.training_tokens / speed)
    assert time.validation_seconds == pytest.approx(
        time.validation_passes * validation * ratio / speed
    )
    assert time.checkpoint_seconds == pytest.approx(
        time.checkpoint_saves * MEASURED_CPU_COSTS.save_seconds
    )
    assert time.load_seconds == MEASURED_CPU_COSTS.load_seconds
    assert estimate.seconds == pytest.approx(
        time.training_seconds
        + time.validation_seconds
        + time.checkpoint_seconds
        + time.load_seconds
    )
    # The interval left to the default keeps validation within its share of the training time.
    assert time.validation_seconds <= VALIDATION_SHARE * time.training_seconds
    assert estimate.intervals_scaled
    # No job measured on the training queue's machines: the first guess, a factor 2 either way.
    assert (time.low_seconds, time.high_seconds) == pytest.approx(
        (estimate.seconds * GUESSED_RANGE[0], estimate.seconds * GUESSED_RANGE[1])
    )
    assert "FTPORTAL_LOCAL_TOKENS_PER_SECOND" in time.basis


def test_validating_every_five_steps_is_counted_pass_by_pass(version, base_model):
    scaled = estimate_of(version, base_model)
    every_five = estimate_of(version, base_model, eval_every_steps=5)

    assert every_five.intervals["eval_every_steps"] == 5
    assert scaled.time is not None and every_five.time is not None
    plan = step_plan(scaled.train_examples, local_config(config_for(Provider.LOCAL, {})))
    assert every_five.time.validation_passes == plan.evaluations_after(0, 5)
    assert every_five.time.validation_passes > scaled.time.validation_passes
    assert every_five.time.validation_seconds > VALIDATION_SHARE * every_five.time.training_seconds
    assert every_five.seconds is not None and scaled.seconds is not None
    assert every_five.seconds > scaled.seconds
    # Only the checkpoint interval is left to the default: it lands on validation steps.
    assert every_five.intervals_scaled
    assert every_five.intervals["checkpoint_every_steps"] % 5 == 0
    both = estimate_of(version, base_model, eval_every_steps=5, checkpoint_every_steps=0)
    assert not both.intervals_scaled
    assert both.intervals == {"eval_every_steps": 5, "checkpoint_every_steps": 0}
    assert both.time is not None and both.time.checkpoint_saves == 1  # the final adapter


def test_measured_jobs_on_the_training_queue_machines_set_the_speeds_and_the_range(
    version, lead, base_model
):
    serving_the_training_queue(TRAINING_MACHINE)
    measured = {
        100.0: JobSpeeds(100.0, 250.0, 4, 0.2, 3, 2.0),
        300.0: JobSpeeds(300.0, 600.0, 4, 0.4, 3, 4.0),
        200.0: None,  # finished before jobs recorded their speeds
    }
    for speed, speeds in measured.items():
        finished_job(
            version,
            lead,
            base_model,
            machine=TRAINING_MACHINE,
            speeds=speeds,
            tokens_per_second=speed,
        )
    # Another machine's job, however fast, says nothing about the training queue's.
    finished_job(
        version, lead, base_model, machine="laptop", speeds=None, tokens_per_second=10_000.0
    )

    estimate = estimate_of(version, base_model)

    time = estimate.time
    assert time is not None and time.measured
    assert time.training_seconds == pytest.approx(estimate.training_tokens / 200.0)
    # The medians of what was recorded: validation ratio of (0.4, 0.5), saves, loading.
    ratio = (100 / 250 + 300 / 600) / 2
    validation = validation_tokens(version, base_model)
    assert time.validation_seconds == pytest.approx(
        time.validation_passes * validation * ratio / 200.0
    )
    assert time.checkpoint_seconds == pytest.approx(time.checkpoint_saves * 0.3)
    assert time.load_seconds == pytest.approx(3.0)
    assert TRAINING_MACHINE in time.basis and "median of the last 3 jobs" in time.basis
    assert "laptop" not in time.basis
    # The range: each measured job's own speeds, never narrower than MEASURED_RANGE.
    slowest = seconds_at(estimate, LocalCosts(1 / 100, 0.4 / 100, 0.2, 2.0), validation)
    fastest = seconds_at(estimate, LocalCosts(1 / 300, 0.5 / 300, 0.4, 4.0), validation)
    assert estimate.seconds is not None
    assert time.high_seconds == pytest.approx(max(slowest, estimate.seconds * MEASURED_RANGE[1]))
    assert time.low_seconds == pytest.approx(min(fastest, estimate.seconds * MEASURED_RANGE[0]))
    assert time.low_seconds < estimate.seconds < time.high_seconds


def test_one_measured_job_gives_the_documented_range(version, lead, base_model):
    serving_the_training_queue(TRAINING_MACHINE)
    finished_job(
        version,
        lead,
        base_model,
        machine=TRAINING_MACHINE,
        speeds=JobSpeeds(150.0, 400.0, 2, 0.25, 2, 3.0),
        tokens_per_second=150.0,
    )

    estimate = estimate_of(version, base_model)

    assert estimate.time is not None and estimate.time.measured
    assert estimate.seconds is not None
    assert (estimate.time.low_seconds, estimate.time.high_seconds) == pytest.approx(
        (estimate.seconds * MEASURED_RANGE[0], estimate.seconds * MEASURED_RANGE[1])
    )


def test_the_speeds_event_reads_back_what_it_says():
    speeds = JobSpeeds(812.5, 2031.2, 12, 0.125, 5, 2.25)
    assert JobSpeeds.from_text(speeds.text()) == speeds
    training_only = JobSpeeds(90.0)
    assert JobSpeeds.from_text(training_only.text()) == training_only
    assert JobSpeeds.from_text("Checkpoint saved at step 4") is None


class MeasuringFineTuner:
    """Trains nothing; reports one step and the measurements a real run reports."""

    device = "cpu"
    metrics = {
        "tokens_per_second": 250.0,
        "validation_passes": 4.0,
        "validation_seconds": 8.0,
        "validation_tokens": 1000.0,
        "checkpoint_saves": 2.0,
        "checkpoint_seconds": 0.5,
        "load_seconds": 3.5,
    }

    def train(
        self,
        *,
        output_dir: Path,
        on_progress: Callable[[TrainingProgress], None],
        on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
        **_: Any,
    ) -> TrainingResult:
        on_progress(TrainingProgress(step=1, total_steps=1, epoch=1.0, tokens_per_second=250.0))
        return TrainingResult(
            adapter_dir=output_dir,
            steps=1,
            train_loss=0.5,
            val_loss=0.6,
            device="cpu",
            seconds=1.0,
            metrics=dict(self.metrics),
        )


def test_what_the_runner_records_the_next_estimate_on_that_machine_uses(
    project, lead, version, base_model, monkeypatch
):
    monkeypatch.setattr(runner, "fine_tuner_for", lambda base: MeasuringFineTuner())
    job = training_job_create(
        project=project, dataset_version=version, base_model=base_model, user=lead
    )
    runner.training_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED

    recorded = JobEvent.objects.get(job=job, provider_event_id=SPEEDS_EVENT_ID)
    assert JobSpeeds.from_text(recorded.message) == JobSpeeds(250.0, 500.0, 4, 0.25, 2, 3.5)
    assert launch_estimate_time_measured(version, base_model) is False  # nobody serves the queue
    serving_the_training_queue(socket.gethostname())
    estimate = estimate_of(version, base_model)
    assert estimate.time is not None and estimate.time.measured
    assert estimate.time.training_seconds == pytest.approx(estimate.training_tokens / 250.0)
    assert estimate.time.load_seconds == pytest.approx(3.5)
    assert estimate.time.checkpoint_seconds == pytest.approx(estimate.time.checkpoint_saves * 0.25)


def launch_estimate_time_measured(version: DatasetVersion, base_model: BaseModel) -> bool:
    estimate = estimate_of(version, base_model)
    assert estimate.time is not None
    return estimate.time.measured


def test_the_launch_stores_the_intervals_its_estimate_counted_with(
    project, lead, version, base_model
):
    scaled = training_job_create(
        project=project, dataset_version=version, base_model=base_model, user=lead
    )
    estimate = estimate_of(version, base_model)
    assert scaled.hyperparameters["eval_every_steps"] == estimate.intervals["eval_every_steps"]
    assert (
        scaled.hyperparameters["checkpoint_every_steps"]
        == estimate.intervals["checkpoint_every_steps"]
    )
    explicit = training_job_create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        user=lead,
        hyperparameters={"eval_every_steps": 7, "checkpoint_every_steps": 0},
    )
    assert explicit.hyperparameters["eval_every_steps"] == 7
    assert explicit.hyperparameters["checkpoint_every_steps"] == 0
    queued = explicit.events.first()
    assert queued is not None and "validation passes" in queued.message


def test_the_launch_page_shows_the_range_the_parts_and_the_basis(
    project, lead, version, base_model
):
    client = Client()
    client.force_login(lead)
    url = reverse("job_estimate", args=[project.pk, version.pk])

    html = client.get(url, {"base_model": base_model.key}).content.decode()

    estimate = estimate_of(version, base_model)
    assert estimate.time is not None
    assert 'id="estimate-range"' in html
    assert f"{estimate.time.validation_passes} validation pass" in html
    assert 'data-speed-source="first_guess"' in html
    assert "FTPORTAL_LOCAL_TOKENS_PER_SECOND" in html
    assert f"Validation every {estimate.intervals['eval_every_steps']}" in html
    assert "scaled to the data" in html
    typed = client.get(
        url, {"base_model": base_model.key, "eval_every_steps": "1", "checkpoint_every_steps": "2"}
    ).content.decode()
    assert "Validation every 1 step," in typed and "scaled to the data" not in typed


def test_a_reviewer_gets_no_estimate(project, make_member, version, base_model):
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("job_estimate", args=[project.pk, version.pk])
    assert client.get(url, {"base_model": base_model.key}).status_code == 403


def test_the_estimate_api_gives_the_time_with_its_range_parts_and_basis(
    project, lead, version, base_model
):
    response = token_client(lead).post(
        api(project, "training-jobs/estimate/"),
        {"dataset_version": version.pk, "base_model": base_model.key, "hyperparameters": {}},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    time = body["time"]
    assert time["low_seconds"] < time["seconds"] < time["high_seconds"]
    assert time["seconds"] == pytest.approx(sum(time["parts"].values()))
    assert time["speed_source"] == "first_guess"
    assert time["validation_passes"] >= 1
    assert body["intervals"]["eval_every_steps"] >= 1
    assert body["intervals_scaled"] and "10%" in body["intervals_rule"]
