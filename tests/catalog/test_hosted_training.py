"""Hosted fine-tuning sends a key only to its base model's registered endpoint."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from catalog.services import endpoint_register
from fakes.openai_server import FakeOpenAIServer
from ftportal.models import Project
from ftportal.roles import Role
from tests.factories import frozen_version
from training.hosted import training_job_submit
from training.models import JobStatus, TrainingJob

from .test_endpoints import SECRET, SECRET_ENV, endpoint_secret  # noqa: F401

pytestmark = pytest.mark.django_db


def hosted_job(project: Project, lead: User, endpoint: Endpoint) -> TrainingJob:
    base, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": endpoint,
            "deprecated_at": None,
            "is_active": True,
        },
    )
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base,
        provider=Provider.OPENAI,
        hyperparameters={"epochs": 2, "batch_size": None, "learning_rate_multiplier": None},
        model_name="triage",
        created_by=lead,
    )


def test_a_hosted_job_sends_its_endpoints_secret_to_that_endpoint_only(
    project: Project, make_member: Callable[[Role], User], settings: Any
) -> None:
    lead = make_member(Role.ML_LEAD)
    with FakeOpenAIServer(api_key=SECRET) as home, FakeOpenAIServer() as default:
        # The provider default leads elsewhere, with OPENAI_API_KEY: it must hear nothing.
        settings.OPENAI_BASE_URL = default.base_url
        endpoint = endpoint_register(
            name="ft-home",
            kind=EndpointKind.OPENAI_COMPATIBLE,
            base_url=home.base_url,
            secret_env=SECRET_ENV,
            models=["gpt-4o-mini-2024-07-18"],
        )
        job = hosted_job(project, lead, endpoint)

        training_job_submit(job_id=job.pk)

        job.refresh_from_db()
        assert job.status != JobStatus.FAILED, job.error
        assert home.requests
        assert {r.headers["authorization"] for r in home.requests} == {f"Bearer {SECRET}"}
        assert default.requests == []


def test_a_hosted_base_model_needs_a_registered_openai_endpoint() -> None:
    row = BaseModel(key="gpt-x", display_name="GPT x", provider=Provider.OPENAI)
    with pytest.raises(ValidationError) as refused:
        row.full_clean()
    assert "endpoint" in refused.value.message_dict
    row.endpoint = Endpoint.objects.get(name="anthropic")
    with pytest.raises(ValidationError, match="OpenAI"):
        row.full_clean()
    row.endpoint = Endpoint.objects.get(name="openai")
    row.full_clean()


def test_the_seeded_endpoints_keep_hosted_work_going_out_of_the_box() -> None:
    defaults = {e.name: (e.kind, e.base_url, e.secret_env) for e in Endpoint.objects.all()}
    assert defaults == {
        "openai": (EndpointKind.OPENAI, "", "OPENAI_API_KEY"),
        "anthropic": (EndpointKind.ANTHROPIC, "", "ANTHROPIC_API_KEY"),
    }
    hosted = BaseModel.objects.filter(provider=Provider.OPENAI)
    assert hosted.exists()
    assert {row.endpoint.name if row.endpoint else None for row in hosted} == {"openai"}
