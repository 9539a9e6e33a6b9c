"""Job lifecycle without a worker: transitions, launch checks and estimates, the reaper, attempt
ownership, overfitting, checkpoints and the catalog's end-of-life dates."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from datasets.models import DatasetVersionExample, Split
from datasets.quality.tokens import count_conversations, tiktoken_counter
from ftportal.errors import ApplicationError, ConflictError
from ftportal.heartbeat import worker_presence_record
from ftportal.roles import Role
from registry.selectors import versions_losing_their_base
from registry.services import model_version_register, model_version_register_checkpoint
from tests.factories import frozen_version
from training import runner
from training.estimates import launch_estimate
from training.hyperparameters import config_for, hosted_config_from, training_config_from
from training.models import JOB_TRANSITIONS, Checkpoint, JobStatus, TrainingJob
from training.reaper import abandoned_jobs_reap
from training.selectors import overfitting_signal
from training.services import training_job_create, transition

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member):
    return make_member(Role.ML_LEAD)


@pytest.fixture
def hosted_model(db) -> BaseModel:
    model, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "deprecated_at": None,
            "retires_at": None,
            "is_active": True,
        },
    )
    # The seeded endpoint's own end of fine-tuning (OpenAI's, a real date) is tested on its
    # own below; here the model's dates are the test's.
    Endpoint.objects.filter(base_models=model).update(fine_tuning_ends_at=None)
    model.refresh_from_db()
    return model


def make_job(project, lead, base_model, **fields) -> TrainingJob:
    return TrainingJob.objects.create(
        project=project,
        dataset_version=fields.pop("version", None) or frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 3},
        model_name="triage",
        created_by=lead,
        **fields,
    )


def test_every_transition_outside_the_table_is_refused(project, lead, base_model):
    job = make_job(project, lead, base_model)
    for current in JobStatus:
        for target in JobStatus:
            job.status = current
            allowed = target in JOB_TRANSITIONS.get(current, frozenset())
            if allowed:
                transition(job, target)
                assert job.status == target
            else:
                with pytest.raises(ConflictError, match=f"from '{current}' to '{target}'"):
                    transition(job, target)
    # Finished jobs never move again.
    for finished in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert finished not in JOB_TRANSITIONS


def test_a_base_model_that_takes_no_new_jobs_is_refused_and_nothing_is_stored(
    project, lead, hosted_model
):
    hosted_model.deprecated_at = timezone.localdate() - datetime.timedelta(days=1)
    hosted_model.save()
    with pytest.raises(ApplicationError, match="no new fine-tuning jobs since") as error:
        training_job_create(
            project=project,
            dataset_version=frozen_version(project, lead),
            base_model=hosted_model,
            user=lead,
        )
    assert error.value.extra["field"] == "base_model"
    assert not TrainingJob.objects.exists()


def test_the_estimate_prices_the_tokens_and_warns_in_the_guides_words(project, lead, hosted_model):
    hosted_model.deprecated_at = timezone.localdate() + datetime.timedelta(days=30)
    hosted_model.save()
    version = frozen_version(project, lead)
    stored = config_for(hosted_model.provider, {"epochs": 8})

    estimate = launch_estimate(version=version, base_model=hosted_model, hyperparameters=stored)

    train = list(version.items.filter(split=Split.TRAIN).values_list("messages", flat=True))
    per_epoch = int(count_conversations(train, tiktoken_counter("o200k_base")).total.sum())
    assert estimate.tokens_per_epoch == per_epoch > 0
    assert estimate.training_tokens == per_epoch * 8
    assert estimate.cost_usd == (Decimal(per_epoch * 8) * Decimal("3.00") / 10**6).quantize(
        Decimal("0.0001")
    )
    codes = {w.code for w in estimate.warnings}
    assert codes == {"insufficient_data", "many_epochs", "base_model_deprecating"}
    insufficient = next(w for w in estimate.warnings if w.code == "insufficient_data")
    assert "insufficient data" in insufficient.message


def test_no_validation_split_and_truncation_are_warned_about(project, lead, base_model):
    version = frozen_version(project, lead)
    version.items.update(split=Split.TRAIN)
    stored = config_for(base_model.provider, {"max_seq_len": 32})
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
    codes = {w.code for w in estimate.warnings}
    assert {"no_validation_split", "truncated"} <= codes
    assert estimate.truncated_examples == estimate.train_examples


def test_local_time_estimates_use_the_median_speed_of_finished_local_jobs(
    project, lead, base_model
):
    version = frozen_version(project, lead)
    for speed in (100.0, 300.0, 200.0):
        make_job(
            project,
            lead,
            base_model,
            version=version,
            status=JobStatus.SUCCEEDED,
            tokens_per_second=speed,
            finished_at=timezone.now(),
        )
    # Measured on the machine that serves the training queue (training.estimates).
    TrainingJob.objects.update(worker="trainer-host:41")
    worker_presence_record(
        name="celery@trainer-host:40",
        hostname="celery@trainer-host",
        pid=40,
        queues=["training"],
        now=timezone.now(),
    )
    stored = config_for(base_model.provider, {})
    estimate = launch_estimate(version=version, base_model=base_model, hyperparameters=stored)
    assert estimate.time is not None
    assert estimate.time.training_seconds == pytest.approx(estimate.training_tokens / 200.0)
    assert "the median of the last 3 jobs of this model" in estimate.seconds_basis
    assert estimate.cost_usd is not None and estimate.cost_usd > 0


def test_hosted_and_local_jobs_take_their_own_hyperparameters():
    assert hosted_config_from({"learning_rate_multiplier": "0.5"}).learning_rate_multiplier == 0.5
    assert hosted_config_from({}).batch_size is None  # auto: the provider picks
    with pytest.raises(ApplicationError) as error:
        hosted_config_from({"lora_r": 8})
    assert error.value.extra["field"] == "hyperparameters.lora_r"
    local = training_config_from({"target_modules": "q_proj, v_proj, q_proj"})
    assert local.target_modules == ("q_proj", "v_proj")
    with pytest.raises(ApplicationError, match="not a module name"):
        training_config_from({"target_modules": "q_proj; rm -rf"})
    assert config_for(Provider.LOCAL, {"early_stopping_patience": 2})["target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ]


def test_data_problems_name_the_item_and_the_field(project, lead, base_model):
    job = make_job(project, lead, base_model)
    item = job.dataset_version.items.filter(split=Split.TRAIN).first()
    DatasetVersionExample.objects.filter(pk=item.pk).update(messages=item.messages[:-1])
    [problem] = runner.data_problems(job)
    assert problem.startswith(f"train item {item.position}: messages[1].role")


def silent(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


def test_the_reaper_requeues_a_silent_local_job_to_resume_and_gives_up_after_max_attempts(
    project, lead, base_model, settings, django_capture_on_commit_callbacks
):
    settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS = 60
    settings.FTPORTAL_MAX_JOB_ATTEMPTS = 2
    stale = make_job(
        project,
        lead,
        base_model,
        status=JobStatus.RUNNING,
        attempts=1,
        heartbeat_at=silent(120),
        worker="gpu-1:42",
    )
    Checkpoint.objects.create(job=stale, step=20, path="/nowhere")
    alive = make_job(
        project, lead, base_model, status=JobStatus.RUNNING, attempts=1, heartbeat_at=silent(5)
    )
    exhausted = make_job(
        project, lead, base_model, status=JobStatus.RUNNING, attempts=2, heartbeat_at=silent(120)
    )

    with django_capture_on_commit_callbacks(execute=False) as dispatched:
        reaped = abandoned_jobs_reap()

    assert sorted(reaped) == sorted([stale.pk, exhausted.pk])
    stale.refresh_from_db()
    alive.refresh_from_db()
    exhausted.refresh_from_db()
    assert stale.status == JobStatus.QUEUED and stale.heartbeat_at is None
    assert (
        stale.events.filter(
            message__contains="gpu-1:42 stopped responding",
        )
        .filter(message__contains="resume from the checkpoint at step 20")
        .exists()
    )
    assert alive.status == JobStatus.RUNNING
    assert exhausted.status == JobStatus.FAILED
    assert "gave up after 2 attempts" in exhausted.error
    assert len(dispatched) == 1  # only the requeued job is sent to a worker again


def test_the_reaper_counts_attempts_since_a_job_was_last_resumed_as_evaluations_do(
    project, lead, base_model, settings, django_capture_on_commit_callbacks
):
    """One rule for every worker-owned row (ftportal/ownership.py): a person who resumes a job
    gets a fresh set of tries, while attempts keeps growing to fence off stale workers."""
    settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS = 60
    settings.FTPORTAL_MAX_JOB_ATTEMPTS = 2
    resumed = make_job(
        project,
        lead,
        base_model,
        status=JobStatus.RUNNING,
        attempts=3,
        resumed_after_attempts=2,
        heartbeat_at=silent(120),
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert abandoned_jobs_reap() == [resumed.pk]
    resumed.refresh_from_db()
    assert resumed.status == JobStatus.QUEUED  # one death since the resume: tried again

    TrainingJob.objects.filter(pk=resumed.pk).update(
        status=JobStatus.RUNNING, attempts=4, heartbeat_at=silent(120)
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert abandoned_jobs_reap() == [resumed.pk]
    resumed.refresh_from_db()
    assert resumed.status == JobStatus.FAILED
    assert "gave up after 2 attempts" in resumed.error


def test_the_reaper_polls_a_silent_hosted_job_again_instead_of_failing_it(
    project, lead, hosted_model, settings, django_capture_on_commit_callbacks
):
    settings.FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS = 60
    job = make_job(
        project,
        lead,
        hosted_model,
        status=JobStatus.RUNNING,
        attempts=1,
        provider_job_id="ftjob-1",
        heartbeat_at=silent(600),
    )
    with django_capture_on_commit_callbacks(execute=False) as dispatched:
        assert abandoned_jobs_reap() == [job.pk]
        assert abandoned_jobs_reap() == []  # nudged once per timeout, not once per run
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    assert len(dispatched) == 1


def test_an_attempt_the_reaper_replaced_can_no_longer_write(project, lead, base_model):
    from providers.base import TrainingProgress

    job = make_job(project, lead, base_model, status=JobStatus.RUNNING, attempts=2)
    progress = TrainingProgress(step=5, total_steps=10, epoch=0.5, train_loss=1.0)
    runner._record_progress(job, 2, progress)
    assert job.metrics.filter(step=5).exists()
    with pytest.raises(runner.AttemptSuperseded):
        runner._record_progress(job, 1, TrainingProgress(step=6, total_steps=10, epoch=0.6))
    assert not job.metrics.filter(step=6).exists()


def curves(train: list[float], val: dict[int, float]) -> list[tuple[int, float, float | None]]:
    """One row per step, as the worker records them: train loss, and validation at some."""
    return [(step, loss, val.get(step)) for step, loss in enumerate(train, start=1)]


def test_overfitting_is_rising_validation_loss_while_training_loss_falls():
    falling = [2.0 - 0.1 * step for step in range(1, 13)]
    rising_val = {3: 1.0, 6: 1.1, 9: 1.2, 12: 1.3}
    signal = overfitting_signal(curves(falling, rising_val))
    assert signal is not None
    assert (signal.since_step, signal.best_step, signal.best_val_loss) == (3, 3, 1.0)
    assert "memorising" in signal.message

    assert overfitting_signal(curves(falling, {6: 1.1, 9: 1.2, 12: 1.3})) is None  # 2 rises
    assert overfitting_signal(curves(falling, {3: 1.0, 6: 0.9, 9: 1.2, 12: 1.3})) is None
    rising_train = [1.0 + 0.1 * step for step in range(1, 13)]
    assert overfitting_signal(curves(rising_train, rising_val)) is None  # diverging, not memorising


def test_a_checkpoint_is_registered_as_a_model_version_once(project, lead, base_model):
    job = make_job(project, lead, base_model, status=JobStatus.SUCCEEDED)
    model_version_register(job=job, checkpoint=None, adapter_dir="/final")
    checkpoint = Checkpoint.objects.create(job=job, step=10, path="/ckpt/10", val_loss=0.5)

    version = model_version_register_checkpoint(checkpoint=checkpoint)

    assert (version.number, version.adapter_dir, version.final_val_loss) == (2, "/ckpt/10", 0.5)
    assert version.checkpoint == checkpoint and version.training_job == job
    with pytest.raises(ConflictError, match="step 10 is registered already"):
        model_version_register_checkpoint(checkpoint=checkpoint)


def test_versions_whose_base_model_goes_away_are_listed_with_the_reason(
    project, lead, base_model, hosted_model
):
    today = timezone.localdate()
    hosted_model.deprecated_at = today + datetime.timedelta(days=20)
    hosted_model.save()
    going = model_version_register(
        job=make_job(project, lead, hosted_model, status=JobStatus.SUCCEEDED), checkpoint=None
    )
    model_version_register(
        job=make_job(project, lead, base_model, status=JobStatus.SUCCEEDED), checkpoint=None
    )

    [row] = versions_losing_their_base(project, today=today)

    assert row.version == going
    assert f"takes no new fine-tuning jobs from {hosted_model.deprecated_at}" in row.reason


def test_an_endpoint_whose_fine_tuning_ends_warns_and_then_refuses_new_jobs(
    project, lead, hosted_model
):
    endpoint = Endpoint.objects.create(
        name="hosted-ft", kind=EndpointKind.OPENAI, secret_env="OPENAI_API_KEY"
    )
    hosted_model.endpoint = endpoint
    hosted_model.save()
    version = frozen_version(project, lead)
    stored = config_for(hosted_model.provider, {"epochs": 3})

    endpoint.fine_tuning_ends_at = timezone.localdate() + datetime.timedelta(days=31)
    endpoint.save()
    hosted_model.refresh_from_db()
    estimate = launch_estimate(version=version, base_model=hosted_model, hyperparameters=stored)
    [ending] = [w for w in estimate.warnings if w.code == "fine_tuning_ending"]
    assert ending.message.startswith("The endpoint hosted-ft (OpenAI API) accepts no new")
    assert "a local base model" in ending.message

    endpoint.fine_tuning_ends_at = timezone.localdate()
    endpoint.save()
    hosted_model.refresh_from_db()
    with pytest.raises(ApplicationError, match="accepts no new fine-tuning jobs since") as error:
        training_job_create(
            project=project, dataset_version=version, base_model=hosted_model, user=lead
        )
    assert error.value.extra["field"] == "base_model"
    assert not TrainingJob.objects.exists()
