"""Small builders for test data; plain functions, no factory library."""

from __future__ import annotations

import io
import json

from django.contrib.auth.models import User
from django.utils import timezone

from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from catalog.services import endpoint_register
from datasets.imports.services import ImportRequest, examples_import_file
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus, ImportBatch
from datasets.services import dataset_version_freeze
from evaluation.models import Candidate, CandidateKind, EvalResult, EvalRun, EvalSplit, EvalStatus
from evaluation.report import candidate_summary_of, run_report
from ftportal.heartbeat import worker_presence_record
from ftportal.models import Project
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import production_version
from registry.services import model_version_register, rollback_target
from training.estimates import SPEEDS_EVENT_ID, JobSpeeds
from training.hyperparameters import config_for
from training.models import JobStatus, TrainingJob
from training.services import job_event

SYSTEM = "Triage the ticket. Reply with JSON only."
TICKETS = [
    ("I was charged twice this month", "billing", "high"),
    ("The dashboard shows a blank page after login", "bug", "medium"),
    ("How do I change my email address?", "account", "low"),
    ("Please add dark mode", "feature_request", "low"),
    ("Invoice total looks wrong", "billing", "medium"),
    ("Upload fails with error 500", "bug", "high"),
    ("I cannot reset my password", "account", "medium"),
    ("Could you support SSO with Okta?", "feature_request", "low"),
    ("Refund for the annual plan please", "billing", "medium"),
    ("The API returns stale data", "bug", "medium"),
    ("Close my account", "account", "low"),
    ("Export to CSV would help", "feature_request", "low"),
]


def fake_endpoint(
    base_url: str,
    *,
    secret_env: str,
    kind: EndpointKind = EndpointKind.OPENAI_COMPATIBLE,
    models: tuple[str, ...] = (),
) -> Endpoint:
    """An endpoint, registered as an admin would, pointing at a fake provider on 127.0.0.1; the
    same URL and kind give the same endpoint."""
    name = f"{kind}-{base_url.rsplit(':', 1)[-1].split('/')[0]}".replace("_", "-")
    found = Endpoint.objects.filter(name=name).first()
    return found or endpoint_register(
        name=name, kind=kind, base_url=base_url, secret_env=secret_env, models=models
    )


def chat(ticket: str, category: str, priority: str) -> list[dict[str, str]]:
    answer = json.dumps({"category": category, "priority": priority})
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ticket},
        {"role": "assistant", "content": answer},
    ]


def jsonl(conversations: list[list[dict[str, str]]]) -> bytes:
    return "".join(json.dumps({"messages": c}) + "\n" for c in conversations).encode()


def ticket(i: int) -> tuple[str, str, str]:
    """The i-th ticket; each later round through TICKETS is reworded, so no two examples share
    an input (a freeze refuses train and validation examples whose inputs match)."""
    text, category, priority = TICKETS[i % len(TICKETS)]
    round_ = i // len(TICKETS)
    if round_:
        text = f"{text} (customer {1000 + i}, follow-up number {round_})"
    return text, category, priority


def approved_examples(dataset: Dataset, count: int = len(TICKETS)) -> list[Example]:
    """``count`` new approved examples, numbered on from those the dataset already has."""
    start = dataset.examples.count()
    return Example.objects.bulk_create(
        Example(dataset=dataset, messages=chat(*ticket(i)), status=ExampleStatus.APPROVED)
        for i in range(start, start + count)
    )


def frozen_version(project: Project, user: User, count: int = len(TICKETS)) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name=f"tickets-{Dataset.objects.count()}")
    approved_examples(dataset, count)
    return dataset_version_freeze(dataset=dataset, user=user, validation_fraction=0.2)


def label_set_version(project: Project, user: User, count: int) -> DatasetVersion:
    """A frozen version of ``count`` tickets whose contract is the label set of its answers."""
    version = frozen_version(project, user, count=count)
    answers = {item.messages[-1]["content"] for item in version.items.all()}
    version.answer_contract = {"kind": "label_set", "labels": sorted(answers)}
    version.save(update_fields=["answer_contract"])
    return version


def import_bytes(
    *, dataset: Dataset, data: bytes, user: User, valid_lines_only: bool = False
) -> ImportBatch:
    """Import file content through the same streaming path an upload takes."""
    return examples_import_file(
        dataset=dataset,
        stream=io.BytesIO(data),
        filename="t.jsonl",
        size=len(data),
        user=user,
        request=ImportRequest(valid_lines_only=valid_lines_only),
    )


def finished_evaluation(
    *,
    version: ModelVersion,
    against: ModelVersion | None,
    scores: list[float],
    baseline_scores: list[float],
    user: User,
) -> EvalRun:
    """A finished evaluation of ``version`` against ``against`` (or, when None, its base model
    zero-shot) in which each item's exact match is as given, with the report the worker would
    write. Items are the version's dataset items in position order."""
    run = EvalRun.objects.create(
        project=version.registered_model.project,
        dataset_version=version.dataset_version,
        split=EvalSplit.ALL,
        status=EvalStatus.SUCCEEDED,
        created_by=user,
    )
    ours = Candidate.objects.create(
        run=run,
        position=0,
        label=f"{version} (fine-tuned)",
        kind=CandidateKind.MODEL_VERSION,
        model_version=version,
        base_model=version.base_model,
    )
    theirs = Candidate.objects.create(
        run=run,
        position=1,
        label=f"{against} (production)" if against else "base (zero-shot)",
        kind=CandidateKind.MODEL_VERSION if against else CandidateKind.BASE,
        model_version=against,
        base_model=against.base_model if against else version.base_model,
    )
    items = list(version.dataset_version.items.order_by("position")[: len(scores)])
    assert len(items) == len(scores) == len(baseline_scores), "one score per item"
    for candidate, values in ((ours, scores), (theirs, baseline_scores)):
        EvalResult.objects.bulk_create(
            EvalResult(
                candidate=candidate,
                item=item,
                output="answer",
                prompt_tokens=100,
                completion_tokens=10,
                latency_seconds=0.5,
                scores={"exact_match": value},
            )
            for item, value in zip(items, values, strict=True)
        )
        candidate.metrics = candidate_summary_of(candidate)
        candidate.example_count = len(items)
        candidate.save()
    run.report = run_report(run)
    run.finished_at = timezone.now()
    run.save()
    return run


def production_number(registered_model: RegisteredModel) -> int | None:
    """The production version a page loaded now would send as the one it saw (promote and
    rollback refuse with a 409 when production has moved since); None when unset."""
    current = production_version(registered_model)
    return current.number if current else None


def rollback_number(registered_model: RegisteredModel) -> int:
    """The target the registry page's rollback button would post now (1 where there is none;
    the service refuses that case before it looks at the target)."""
    target = rollback_target(registered_model)
    return target.number if target else 1


def registered_version(
    project: Project, lead: User, base_model: BaseModel, **where: str
) -> ModelVersion:
    """A version of a finished job of ``base_model`` on a fresh frozen dataset version,
    registered with ``where`` (``fine_tuned_model=`` for a hosted one, ``adapter_dir=`` for
    a local one)."""
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    return model_version_register(job=job, checkpoint=None, **where)  # type: ignore[arg-type]


def serving_the_training_queue(machine: str) -> None:
    """A worker on ``machine`` that serves the training queue, whose jobs' speeds count."""
    worker_presence_record(
        name=f"celery@{machine}:7",
        hostname=f"celery@{machine}",
        pid=7,
        queues=["training"],
        now=timezone.now(),
    )


def finished_job(
    version: DatasetVersion,
    lead: User,
    base_model: BaseModel,
    *,
    machine: str,
    speeds: JobSpeeds | None,
    tokens_per_second: float,
) -> TrainingJob:
    """A local job that succeeded on ``machine``, with the speeds event its runner records."""
    job = TrainingJob.objects.create(
        project=version.dataset.project,
        dataset_version=version,
        base_model=base_model,
        provider=Provider.LOCAL,
        hyperparameters=config_for(Provider.LOCAL, {}),
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
        worker=f"{machine}:4242",
        tokens_per_second=tokens_per_second,
        finished_at=timezone.now(),
    )
    if speeds is not None:
        job_event(job, speeds.text(), provider_event_id=SPEEDS_EVENT_ID)
    return job
