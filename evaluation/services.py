"""Writes for evaluation: create a run, execute it in the worker."""

from __future__ import annotations

import logging
import time
from statistics import fmean

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from datasets.models import DatasetVersionExample, Split
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.state import check_transition
from providers.base import ProviderError
from registry.models import ModelVersion
from training.adapters import chat_model_for

from .metrics import exact_match, token_f1
from .models import EVAL_TRANSITIONS, Candidate, EvalResult, EvalRun, EvalStatus

logger = logging.getLogger(__name__)
GENERATION_BATCH_SIZE = 16


def eval_run_create(
    *,
    project: Project,
    model_version: ModelVersion,
    user: User,
    max_new_tokens: int = 64,
) -> EvalRun:
    """Fine-tuned version against its base model, zero-shot, on the validation split."""
    if model_version.registered_model.project_id != project.pk:
        raise ApplicationError("The model version belongs to another project.")
    if not 1 <= max_new_tokens <= 1024:
        raise ApplicationError(
            "max_new_tokens must be between 1 and 1024.", extra={"field": "max_new_tokens"}
        )
    if not model_version.dataset_version.items.filter(split=Split.VALIDATION).exists():
        raise ApplicationError(f"{model_version.dataset_version} has no validation examples.")
    with transaction.atomic():
        run = EvalRun.objects.create(
            project=project,
            dataset_version=model_version.dataset_version,
            split=Split.VALIDATION,
            max_new_tokens=max_new_tokens,
            created_by=user,
        )
        Candidate.objects.create(
            run=run,
            position=0,
            label=f"{model_version} (fine-tuned)",
            base_model=model_version.base_model,
            model_version=model_version,
        )
        Candidate.objects.create(
            run=run,
            position=1,
            label=f"{model_version.base_model.display_name} (base, zero-shot)",
            base_model=model_version.base_model,
        )
    from .tasks import execute_eval_run

    transaction.on_commit(lambda: execute_eval_run.delay(run.pk))
    return run


def _transition(run: EvalRun, target: EvalStatus, **changes: object) -> None:
    check_transition(kind="evaluation", current=run.status, target=target, allowed=EVAL_TRANSITIONS)
    run.status = target
    if target == EvalStatus.RUNNING:
        run.started_at = timezone.now()
    else:
        run.finished_at = timezone.now()
    for name, value in changes.items():
        setattr(run, name, value)
    run.save()


def _score_candidate(
    candidate: Candidate, items: list[DatasetVersionExample], max_new: int
) -> None:
    adapter = candidate.model_version.adapter_dir if candidate.model_version else None
    model = chat_model_for(candidate.base_model, adapter_dir=adapter)
    started = time.perf_counter()
    generations = model.generate_batch(
        [item.messages[:-1] for item in items],
        max_new_tokens=max_new,
        batch_size=GENERATION_BATCH_SIZE,
    )
    seconds = time.perf_counter() - started
    results = [
        EvalResult(
            candidate=candidate,
            item=item,
            output=generation.text,
            exact_match=exact_match(generation.text, item.messages[-1]["content"]),
            token_f1=token_f1(generation.text, item.messages[-1]["content"]),
        )
        for item, generation in zip(items, generations, strict=True)
    ]
    EvalResult.objects.bulk_create(results)
    candidate.exact_match = fmean(float(r.exact_match) for r in results)
    candidate.token_f1 = fmean(r.token_f1 for r in results)
    candidate.example_count = len(results)
    candidate.generation_seconds = seconds
    candidate.save()


def eval_run_execute(*, run_id: int) -> EvalRun:
    with transaction.atomic():
        run = EvalRun.objects.select_for_update().get(pk=run_id)
        if run.status != EvalStatus.QUEUED:
            return run
        _transition(run, EvalStatus.RUNNING)
    items = list(run.dataset_version.items.filter(split=run.split))
    try:
        if not items:
            raise ApplicationError(f"The {run.split} split of {run.dataset_version} is empty.")
        for candidate in run.candidates.select_related("model_version", "base_model"):
            _score_candidate(candidate, items, run.max_new_tokens)
    except (ApplicationError, ProviderError, RuntimeError, ValueError, OSError) as exc:
        logger.exception("Evaluation %s failed", run.pk)
        run.refresh_from_db()
        _transition(run, EvalStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return run
    run.refresh_from_db()
    _transition(run, EvalStatus.SUCCEEDED)
    return run
