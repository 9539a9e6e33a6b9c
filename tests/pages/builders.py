"""Builders and readers for page tests in several app folders: a project with something for every
page action to act on (`World`), chat examples and JSONL uploads, the HTMX request header, and a
page's text as a person reads it, hostile markup included."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import unescape

from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion, Example
from evaluation.models import EvalRun
from ftportal.models import Project
from registry.models import ModelVersion, RegisteredModel
from training.models import JobStatus, TrainingJob

XSS = "<script>window.__xss=1</script>"
XSS_ESCAPED = "&lt;script&gt;window.__xss=1&lt;/script&gt;"
HTMX = {"HX-Request": "true"}


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the support ticket. Answer in JSON."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def jsonl_line(question: str, answer: str = '{"category": "billing"}') -> bytes:
    return json.dumps({"messages": chat(question, answer)}).encode()


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/jsonl")


def page_text(response) -> str:
    """The response body with entities decoded, for reading messages as a person would."""
    return unescape(response.content.decode())


def assert_escaped(response) -> None:
    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert XSS_ESCAPED in html


@dataclass
class World:
    """A project with something for every action to act on."""

    project: Project
    dataset: Dataset
    pending: Example
    version: DatasetVersion
    running_job: TrainingJob
    registered: RegisteredModel
    v1: ModelVersion
    v2: ModelVersion
    base_model: BaseModel
    queued_eval: EvalRun


def world_job(world_parts: dict, status: JobStatus, **extra: object) -> TrainingJob:
    """A training job on the world's version, base model and user, in this status."""
    return TrainingJob.objects.create(
        project=world_parts["project"],
        dataset_version=world_parts["version"],
        base_model=world_parts["base_model"],
        provider=world_parts["base_model"].provider,
        hyperparameters={"epochs": 1, "max_steps": 3},
        model_name="tickets-ft",
        created_by=world_parts["user"],
        status=status,
        **extra,
    )


def world_model_version(registered: RegisteredModel, number: int, job: TrainingJob) -> ModelVersion:
    return ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        training_job=job,
        dataset_version=job.dataset_version,
        dataset_hash=job.dataset_version.content_hash,
        base_model=job.base_model,
        hyperparameters=job.hyperparameters,
        adapter_dir=f"/nowhere/job-{job.pk}",
        final_train_loss=1.0,
        final_val_loss=1.1,
    )
