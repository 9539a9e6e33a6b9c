"""Builders for API tests: token clients, JSONL files, the requests the flow tests start from
(a dataset, an import, reviews, a frozen version), and a project with one of everything
(examples in each state, a frozen version, a queued job, a model with a production history)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import BaseModel
from costs.budgets import month_of
from costs.models import BudgetAlert
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus, ReviewAction
from datasets.services import dataset_version_freeze, example_review
from evaluation.models import EvalResult, EvalRun
from evaluation.services import eval_run_for_version
from ftportal.models import Project
from ftportal.tokens import api_token_create
from monitoring.alerts import AlertRaise, alert_raise
from monitoring.models import Alert, AlertKind, AlertRule, RetrainProposal
from monitoring.rules import default_rules_ensure
from registry.models import Alias, ModelVersion, RegisteredModel
from registry.services import model_version_promote, model_version_register
from serving.models import FallbackRoute
from serving.services import RouteSettings, fallback_route_create
from tests.factories import finished_evaluation, import_bytes, production_number
from training.models import Checkpoint, JobStatus, TrainingJob
from training.services import training_job_create

TICKETS = [
    ("My printer is jammed again", "hardware"),
    ("I cannot log in to the VPN", "network"),
    ("Please reset my password", "account"),
    ("The monitor flickers", "hardware"),
    ("Wi-Fi drops every hour", "network"),
    ("Add me to the sales group", "account"),
]


def chat(question: str, answer: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": "Classify the support ticket."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def valid_file(count: int = len(TICKETS)) -> bytes:
    return jsonl(*(chat(q, a) for q, a in TICKETS[:count]))


def upload(data: bytes, name: str = "tickets.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/jsonl")


def token_client(user: User) -> APIClient:
    """A client that authenticates the way API users do: with a token header."""
    client = APIClient()
    _, key = api_token_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# -- requests through the API that the flow tests of several apps start from ------------------


def api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/{tail}"


def create_dataset(client: APIClient, project: Project, name: str = "tickets") -> dict[str, Any]:
    response = client.post(api(project, "datasets/"), {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def import_file(
    client: APIClient, project: Project, dataset_id: int, data: bytes, **extra: Any
) -> Any:
    return client.post(
        api(project, f"datasets/{dataset_id}/imports/"),
        {"file": upload(data), **extra},
        format="multipart",
    )


def review(client: APIClient, project: Project, example_id: int, **body: Any) -> Any:
    """A decision on the example as the client reads it now (its current revision)."""
    if "revision" not in body:
        seen = client.get(api(project, f"examples/{example_id}/")).json()
        body["revision"] = seen["revision"]
    return client.post(api(project, f"examples/{example_id}/review/"), body, format="json")


def approve_all(client: APIClient, project: Project, dataset_id: int) -> None:
    for example in Example.objects.filter(dataset_id=dataset_id):
        assert review(client, project, example.pk, action="approve").status_code == 200


def frozen_version(client: APIClient, project: Project, **body: Any) -> dict[str, Any]:
    dataset = create_dataset(client, project)
    assert import_file(client, project, dataset["id"], valid_file()).status_code == 201
    approve_all(client, project, dataset["id"])
    response = client.post(api(project, f"datasets/{dataset['id']}/versions/"), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def register_model_version(
    *, version: DatasetVersion, base_model: BaseModel, user: User, model_name: str
) -> ModelVersion:
    """What the worker does after training, without training: a finished job, registered."""
    job = TrainingJob.objects.create(
        project=version.dataset.project,
        dataset_version=version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 3, "learning_rate": 2e-4},
        model_name=model_name,
        status=JobStatus.SUCCEEDED,
        created_by=user,
    )
    return model_version_register(
        job=job,
        checkpoint=None,
        adapter_dir=f"/artifacts/adapters/job-{job.pk}",
        train_loss=0.9,
        val_loss=1.1,
    )


def promote_with_evidence(
    version: ModelVersion, *, user: User, against: ModelVersion | None
) -> EvalRun:
    """Promote after a finished evaluation in which the version beat ``against`` (or its base
    model) on every item."""
    items = version.dataset_version.items.count()
    run = finished_evaluation(
        version=version,
        against=against,
        scores=[1.0] * items,
        baseline_scores=[0.0] * items,
        user=user,
    )
    model_version_promote(
        model_version=version,
        expected_current_version=production_number(version.registered_model),
        user=user,
        reason="beat it on every item",
    )
    return run


@dataclass
class World:
    """One project with something of every kind, for tests that try every action."""

    project: Project
    owner: User
    dataset: Dataset
    pending: Example
    approved: Example
    version: DatasetVersion
    queued_job: TrainingJob
    registered_model: RegisteredModel
    first: ModelVersion
    second: ModelVersion
    eval_run: EvalRun
    eval_result: EvalResult
    # The finished evaluations each promotion passed the gate with, oldest first.
    gate_runs: list[EvalRun]


def build_world(*, project: Project, owner: User, base_model: BaseModel) -> World:
    dataset = Dataset.objects.create(project=project, name="tickets")
    import_bytes(dataset=dataset, data=valid_file(), user=owner)
    examples = list(dataset.examples.order_by("id"))
    for example in examples[:4]:
        example_review(example=example, user=owner, action=ReviewAction.APPROVE)
    version = dataset_version_freeze(dataset=dataset, user=owner, validation_fraction=0.2)
    queued_job = training_job_create(
        project=project, dataset_version=version, base_model=base_model, user=owner
    )
    Checkpoint.objects.create(job=queued_job, step=2, path="/artifacts/ckpt-2", val_loss=1.0)
    first = register_model_version(
        version=version, base_model=base_model, user=owner, model_name="triage"
    )
    second = register_model_version(
        version=version, base_model=base_model, user=owner, model_name="triage"
    )
    # Production went first -> second, so a rollback has somewhere to go; each promotion with
    # the finished evaluation the gate asks for.
    gate_runs = [
        promote_with_evidence(first, user=owner, against=None),
        promote_with_evidence(second, user=owner, against=first),
    ]
    # And first beat second later on, so promoting first again passes the gate too.
    items = version.items.count()
    gate_runs.append(
        finished_evaluation(
            version=first,
            against=second,
            scores=[1.0] * items,
            baseline_scores=[0.0] * items,
            user=owner,
        )
    )
    eval_run = eval_run_for_version(project=project, model_version=second, user=owner)
    eval_result = EvalResult.objects.create(
        candidate=eval_run.candidates.all()[0],
        item=version.items.filter(split="validation")[0],
        output="an answer",
        scores={"exact_match": 0.0},
    )
    return World(
        project=project,
        owner=owner,
        dataset=dataset,
        pending=dataset.examples.filter(status=ExampleStatus.PENDING).first(),  # type: ignore[arg-type]
        approved=examples[0],
        version=version,
        queued_job=queued_job,
        registered_model=first.registered_model,
        first=first,
        second=second,
        eval_run=eval_run,
        eval_result=eval_result,
        gate_runs=gate_runs,
    )


def world_fallback_route(world: World) -> FallbackRoute:
    """The production alias's fallback route, made when first asked for: to whichever of the
    two versions the alias does not serve now (an API walk may have promoted either)."""
    alias = Alias.objects.get(registered_model=world.registered_model, name="production")
    existing = FallbackRoute.objects.filter(alias=alias).first()
    if existing is not None:
        return existing
    target = world.second if alias.model_version_id == world.first.pk else world.first
    return fallback_route_create(
        alias=alias,
        user=world.owner,
        wanted=RouteSettings(fallback_version=target, fallback_base_model=None),
    )


def world_budget_alert(world: World) -> BudgetAlert:
    """A budget alert of the project (80 % of $10 this month), made when first asked for."""
    alert, _ = BudgetAlert.objects.get_or_create(
        project=world.project,
        month=month_of(timezone.now()),
        threshold_percent=80,
        defaults={"spent_usd": Decimal("8.00"), "budget_usd": Decimal("10.00")},
    )
    return alert


def world_monitoring_alert(world: World) -> Alert:
    """An open alert of the project's alert list (a rule's), made when first asked for."""
    return alert_raise(
        AlertRaise(
            project_id=world.project.pk,
            kind=AlertKind.RULE,
            key="rule:world",
            title="Error rate of the world's model is high",
        )
    ).alert


def world_alert_rule(world: World) -> AlertRule:
    """The production alias's default error-rate rule, made when first asked for."""
    default_rules_ensure(world.registered_model)
    return AlertRule.objects.get(registered_model=world.registered_model, figure="error_rate")


def world_retrain_proposal(world: World) -> RetrainProposal:
    """An open retraining proposal for the first version, made when first asked for."""
    proposal, _ = RetrainProposal.objects.get_or_create(
        project=world.project,
        registered_model=world.first.registered_model,
        state="open",
        defaults={
            "served_version": world.first,
            "base_model": world.first.base_model,
            "reasons": [{"kind": "drift", "text": "Input drift was alerted."}],
        },
    )
    return proposal
