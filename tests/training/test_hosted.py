"""Hosted jobs through the real OpenAI SDK against the fake fine-tuning API (fakes/):
submit once, mirror the provider's events, metrics and checkpoints, retry what is transient,
fail with the provider's message on what is not, and cost what the provider trained."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog.models import BaseModel, EndpointKind, Provider
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.factories import fake_endpoint, frozen_version
from training.hosted import Outcome, training_job_poll, training_job_submit
from training.models import JobStatus, TrainingJob
from training.services import training_job_cancel

pytestmark = pytest.mark.django_db
MAX_POLLS = 40


@pytest.fixture
def hosted_model(fake_openai: FakeOpenAIServer) -> BaseModel:
    model, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": fake_endpoint(
                fake_openai.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
            ),
            "deprecated_at": None,
            "is_active": True,
        },
    )
    return model


@pytest.fixture
def job(project, make_member, hosted_model) -> TrainingJob:
    lead = make_member(Role.ML_LEAD)
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=hosted_model,
        provider=Provider.OPENAI,
        hyperparameters={
            "epochs": 2,
            "batch_size": None,
            "learning_rate_multiplier": None,
            "seed": 7,
        },
        model_name="Ticket triage v2",
        created_by=lead,
    )


def poll_to_the_end(job: TrainingJob) -> None:
    for _ in range(MAX_POLLS):
        outcome = training_job_poll(job_id=job.pk)
        if outcome == Outcome():
            job.refresh_from_db()
            return
    raise AssertionError(f"job {job.pk} did not finish in {MAX_POLLS} polls")


def test_a_hosted_job_is_submitted_once_mirrored_and_costed(job, fake_openai):
    outcome = training_job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert outcome.poll_in == 0 and job.status == JobStatus.VALIDATING
    assert job.provider_job_id.startswith("ftjob-")
    [sent] = fake_openai.job_create_requests
    assert sent.json["suffix"] == "Ticket-triage-v2"
    assert sent.json["metadata"] == {"ftportal_submission": str(job.submission_key)}

    poll_to_the_end(job)

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:Ticket-triage-v2:")
    assert job.trained_tokens > 0
    assert job.actual_cost_usd == (Decimal(job.trained_tokens) * 3 / 10**6).quantize(
        Decimal("0.0001")
    )
    steps = list(job.metrics.values_list("step", flat=True))
    assert steps == sorted(steps) and len(steps) >= 2
    assert job.checkpoints.count() == 2  # one per epoch, each a model id
    assert all(c.provider_model_id.startswith("ft:") for c in job.checkpoints.all())
    provider_events = job.events.exclude(provider_event_id="")
    assert provider_events.count() == len(set(provider_events.values_list("provider_event_id")))
    version = ModelVersion.objects.get(training_job=job)
    assert version.fine_tuned_model == job.fine_tuned_model
    assert fake_openai.jobs_created == 1


def test_a_worker_that_lost_the_create_response_finds_the_job_instead_of_paying_twice(
    job, fake_openai
):
    fake_openai.drop_response_after_next_job_create()

    first = training_job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert first.retry_in is not None and not job.provider_job_id
    second = training_job_submit(job_id=job.pk, tries=1)

    job.refresh_from_db()
    assert second.poll_in == 0 and job.provider_job_id
    assert fake_openai.jobs_created == 1
    assert job.events.filter(message__contains="trying again").count() == 1


def test_a_429_waits_for_retry_after_and_gives_up_after_the_last_try(job, fake_openai, settings):
    settings.FTPORTAL_PROVIDER_MAX_RETRIES = 1
    fake_openai.fail_next_requests(5, status=429, headers={"Retry-After": "7"})

    first = training_job_submit(job_id=job.pk)
    assert first.retry_in == 7
    last = training_job_submit(job_id=job.pk, tries=1)

    job.refresh_from_db()
    assert last == Outcome() and job.status == JobStatus.FAILED
    assert "gave up after 2 tries" in job.error and "429" in job.error
    assert fake_openai.jobs_created == 0


def test_server_errors_while_polling_back_off_exponentially(job, fake_openai, settings):
    training_job_submit(job_id=job.pk)
    fake_openai.fail_next_requests(2, status=503)
    delays = [training_job_poll(job_id=job.pk, tries=n).retry_in for n in (0, 1)]
    base = settings.FTPORTAL_PROVIDER_BACKOFF_SECONDS
    assert delays == [base, base * 2]
    poll_to_the_end(job)
    assert job.status == JobStatus.SUCCEEDED


def test_a_job_the_provider_fails_shows_the_providers_message(job, fake_openai):
    fake_openai.fail_training_at_step(
        2, message="Training diverged at step 2.", code="training_diverged"
    )
    training_job_submit(job_id=job.pk)
    poll_to_the_end(job)
    assert job.status == JobStatus.FAILED
    assert "Training diverged at step 2." in job.error
    assert not ModelVersion.objects.filter(training_job=job).exists()
    assert job.actual_cost_usd is None


def test_cancelling_a_hosted_job_cancels_it_at_the_provider(job, fake_openai):
    training_job_submit(job_id=job.pk)
    training_job_poll(job_id=job.pk)
    training_job_cancel(job=job)
    poll_to_the_end(job)
    assert job.status == JobStatus.CANCELLED
    [provider_job] = fake_openai.jobs.values()
    assert provider_job.status == "cancelled"


def test_a_missing_key_fails_the_job_with_the_reason(job, monkeypatch, fake_openai):
    monkeypatch.delenv("OPENAI_API_KEY")
    training_job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "the variable OPENAI_API_KEY is not set on this worker" in job.error
    assert fake_openai.requests == []
