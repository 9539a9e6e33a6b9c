"""Finished evaluation runs built straight in the database: answers chosen per item, scored,
summarised and reported by the same code the worker uses, without generating anything."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from evaluation.models import (
    CandidateKind,
    EvalKind,
    EvalResult,
    EvalRun,
    EvalStatus,
    Prompting,
)
from evaluation.prompting import answer_of
from evaluation.report import run_report
from evaluation.runner import _summarise, test_items
from evaluation.scoring import Checks, score_answer
from evaluation.services import CandidateSpec, eval_run_create
from tests.api.builders import register_model_version
from training.models import TrainingJob


def finished_run(
    *,
    version: DatasetVersion,
    user: User,
    answers: Sequence[tuple[CandidateSpec, Sequence[bool]]],
    kind: EvalKind = EvalKind.COMPARISON,
    training_job: TrainingJob | None = None,
) -> EvalRun:
    """Each candidate answers item i with the reference when ``right[i]``, else "wrong"; items
    past the list's end are answered wrong. Token counts: 100 in, 5 out per answer."""
    run = eval_run_create(
        project=version.dataset.project,
        dataset_version=version,
        candidates=[spec for spec, _ in answers],
        user=user,
        kind=kind,
        training_job=training_job,
    )
    items = test_items(run)
    for candidate, (_, right) in zip(run.candidates.all(), answers, strict=True):
        rows = []
        for index, item in enumerate(items):
            output = answer_of(item.messages) if index < len(right) and right[index] else "wrong"
            rows.append(
                EvalResult(
                    candidate=candidate,
                    item=item,
                    output=output,
                    latency_seconds=0.5,
                    prompt_tokens=100,
                    completion_tokens=5,
                    scores=score_answer(output, answer_of(item.messages), Checks()),
                )
            )
        EvalResult.objects.bulk_create(rows)
        _summarise(candidate)
    run.status = EvalStatus.SUCCEEDED
    run.report = run_report(run)
    run.save()
    return run


def fine_tuned_against_five_shot(
    version: DatasetVersion, lead: User, base_model: BaseModel, tuned: int, shot: int
) -> EvalRun:
    """A finished run of a registered version answering ``tuned`` of the validation items
    right against its base model 5-shot answering ``shot`` right."""
    model_version = register_model_version(
        version=version, base_model=base_model, user=lead, model_name="triage"
    )
    items = version.validation_count
    return finished_run(
        version=version,
        user=lead,
        answers=[
            (
                CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=model_version),
                [i < tuned for i in range(items)],
            ),
            (
                CandidateSpec(
                    kind=CandidateKind.BASE,
                    base_model=base_model,
                    prompting=Prompting.FEW_SHOT,
                    few_shot_k=5,
                ),
                [i < shot for i in range(items)],
            ),
        ],
    )
