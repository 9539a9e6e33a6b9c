"""Writes for quality analysis: analysis runs, their findings, safe bulk fixes, readiness.

The pure work (validation, token counting, analyzers) lives in ``datasets.quality``; these
services load rows, call it and store what it found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog.models import BaseModel, Provider
from catalog.selectors import base_model_by_key
from catalog.weights import base_model_dir, prepared_model_dir
from ftportal.errors import ApplicationError, ConflictError
from ftportal.state import state_change

from ..contracts import describe_contract
from ..models import (
    ANALYSIS_TRANSITIONS,
    AnalysisRun,
    AnalysisStatus,
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    Finding,
    ReviewAction,
    ReviewDecision,
    Split,
)
from ..services import assistant_answer, example_transition
from ..spending import analysis_spend_record
from ..splits import answer_labels
from .findings import EXACT_DUPLICATE
from .report import AnalysisResult, analyze_conversations
from .stats import TOKENS_PER_EPOCH_MEANS, epoch_totals, label_readiness, readiness_verdict
from .tokens import (
    TokenCounter,
    TokenizerUnavailable,
    count_conversations,
    counter_for,
    tiktoken_counter,
)

logger = logging.getLogger(__name__)

# Rejected examples are out of the training data, so they are not analysed.
ANALYZED_STATUSES = (ExampleStatus.PENDING, ExampleStatus.APPROVED, ExampleStatus.DISPUTED)
# Providers whose chat format refuses two user or two assistant turns in a row.
ALTERNATING_PROVIDERS = frozenset({"anthropic", "bedrock"})
# When the local model's tokenizer is not on this machine, readiness still gives an estimate.
FALLBACK_ENCODING = "o200k_base"
FINDINGS_BATCH = 5000


def token_counter_for(base_model: BaseModel) -> TokenCounter:
    if base_model.tokenizer:
        return counter_for(tokenizer=base_model.tokenizer, model_dir=Path())
    return counter_for(tokenizer="", model_dir=prepared_model_dir(base_model))


def counter_or_estimate(base_model: BaseModel | None) -> tuple[TokenCounter, str]:
    """The base model's own tokenizer, else (the web process never converts weights, and a
    hosted model may name none) OpenAI's, which gives a close estimate; and which one it is."""
    if base_model is not None:
        try:
            return token_counter_for(base_model), base_model.key
        except TokenizerUnavailable:
            logger.warning(
                "tokenizer of %s unavailable; counting with %s", base_model.key, FALLBACK_ENCODING
            )
    return tiktoken_counter(FALLBACK_ENCODING), f"estimate with {FALLBACK_ENCODING}"


def version_tokens_per_epoch(*, version: DatasetVersion, counter: TokenCounter) -> int:
    """The one count of "tokens per epoch" every page shows (TOKENS_PER_EPOCH_MEANS): each
    training-split conversation in full, prompt and answer with the chat template around them.

    The model reads every one of those tokens in a pass (the loss is on the answers only) and
    hosted providers bill them all; validation items are never trained on, so they are out.
    """
    train = version.items.filter(split=Split.TRAIN).values_list("messages", flat=True)
    return int(count_conversations(list(train), counter).total.sum())


def analyze_for_model(
    conversations: Sequence[object],
    *,
    base_model: BaseModel,
    names: Sequence[str],
    contract: dict[str, Any] | None = None,
) -> AnalysisResult:
    price = base_model.training_usd_per_million_tokens
    result = analyze_conversations(
        conversations,
        counter=token_counter_for(base_model),
        context_window=base_model.context_window,
        strict_alternation=base_model.provider in ALTERNATING_PROVIDERS,
        names=names,
        usd_per_million_tokens=price,
        contract=contract,
    )
    result.stats["base_model"] = base_model.key
    result.stats["base_model_name"] = base_model.display_name
    return result


def examples_fingerprint(rows: Sequence[tuple[int, Any, int, str]]) -> str:
    """A digest of (id, messages, revision, status) of the analysed examples: if it differs
    later, someone changed, added or decided an example since the analysis."""
    digest = hashlib.sha256()
    for pk, messages, revision, status in rows:
        digest.update(f"{pk}:{revision}:{status}:".encode())
        digest.update(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _analyzed_rows(dataset: Dataset) -> list[tuple[int, Any, int, str]]:
    return list(
        Example.objects.filter(dataset=dataset, status__in=ANALYZED_STATUSES)
        .order_by("id")
        .values_list("id", "messages", "revision", "status")
    )


def analysis_run_create(*, dataset: Dataset, base_model: BaseModel, user: User) -> AnalysisRun:
    """Queue an analysis of the dataset's pending, approved and disputed examples.

    One analysis at a time per dataset: a second would compete for the same worker and its
    findings would replace the first's a moment later.
    """
    with transaction.atomic():
        # The dataset row lock makes "is one unfinished?" and the insert one step.
        Dataset.objects.select_for_update().get(pk=dataset.pk)
        unfinished = dataset.analyses.filter(
            status__in=[AnalysisStatus.QUEUED, AnalysisStatus.RUNNING]
        ).first()
        if unfinished is not None:
            raise ConflictError(
                f"Analysis {unfinished.pk} of this dataset is still "
                f"{unfinished.get_status_display().lower()}; wait for it to finish.",
                extra={"run": unfinished.pk},
            )
        run = AnalysisRun.objects.create(
            dataset=dataset, base_model_key=base_model.key, created_by=user
        )
    # Deferred: datasets.tasks imports this module to do the work it queues.
    from ..tasks import run_analysis

    # After commit, so the worker never looks for a run that is not there yet.
    transaction.on_commit(lambda: run_analysis.delay(run.pk))
    return run


def analysis_run_transition(run: AnalysisRun, target: AnalysisStatus, **changes: object) -> None:
    """Move a run to ``target`` if ANALYSIS_TRANSITIONS allows it, with the other field changes;
    only those columns are written."""
    state_change(
        run,
        kind="analysis run",
        target=target,
        allowed=ANALYSIS_TRANSITIONS,
        changes=changes,
        update_fields=(),
    )


def analysis_run_execute(*, run_id: int) -> AnalysisRun:
    """Run the analysis and store its statistics and findings in one transaction."""
    claimed = _claim(run_id)
    if claimed is None:
        return AnalysisRun.objects.get(pk=run_id)
    run = claimed
    # This worker's time from here on is the analysis's data preparation spend.
    started = time.monotonic()
    try:
        base_model = base_model_by_key(run.base_model_key)
        if base_model is None:
            raise ApplicationError(f"Base model '{run.base_model_key}' is not in the catalog.")
        if base_model.provider == Provider.LOCAL:
            # The worker converts the shipped weights once if nobody has yet, as training does;
            # the tokenizer is saved beside them. (Web requests never do: it would load torch.)
            base_model_dir(base_model)
        rows = _analyzed_rows(run.dataset)
        result = analyze_for_model(
            [messages for _, messages, _, _ in rows],
            base_model=base_model,
            names=[f"example {pk}" for pk, _, _, _ in rows],
            contract=run.dataset.answer_contract,
        )
        result.stats["fingerprint"] = examples_fingerprint(rows)
    except (ApplicationError, TokenizerUnavailable) as error:
        return _fail(run_id, str(getattr(error, "message", error)), started=started)
    except Exception as error:
        logger.exception("analysis run %s failed", run_id)
        return _fail(run_id, f"{type(error).__name__}: {error}", started=started)
    ids = [pk for pk, _, _, _ in rows]
    with transaction.atomic():
        run = AnalysisRun.objects.select_for_update().get(pk=run_id)
        if run.status != AnalysisStatus.RUNNING:
            return run  # another delivery of the task finished it first
        Finding.objects.bulk_create(
            (
                Finding(
                    run=run,
                    example_id=ids[issue.index],
                    kind=issue.kind,
                    severity=issue.severity,
                    message=issue.message,
                    group_key=issue.group_key,
                )
                for issue in result.issues
            ),
            batch_size=FINDINGS_BATCH,
        )
        analysis_run_transition(
            run, AnalysisStatus.SUCCEEDED, stats=result.stats, finished_at=timezone.now()
        )
        analysis_spend_record(run, seconds=time.monotonic() - started)
    return run


def _claim(run_id: int) -> AnalysisRun | None:
    """Mark the run running; None when this delivery of the task has nothing to do."""
    with transaction.atomic():
        run = AnalysisRun.objects.select_for_update().get(pk=run_id)
        if run.status == AnalysisStatus.RUNNING:
            # The task is acknowledged late, so a redelivery means the worker that started the
            # run died. It stored nothing (findings are written in one final transaction), so
            # the run starts over rather than staying "running" for ever.
            logger.warning("analysis run %s was left running by a lost worker; restarting", run_id)
            return run
        if run.status != AnalysisStatus.QUEUED:
            return None
        analysis_run_transition(run, AnalysisStatus.RUNNING)
    return run


def _fail(run_id: int, message: str, *, started: float) -> AnalysisRun:
    with transaction.atomic():
        run = AnalysisRun.objects.select_for_update().get(pk=run_id)
        if run.status != AnalysisStatus.RUNNING:
            return run
        # The message often carries an exception's text; the transition takes the server
        # paths out of it.
        analysis_run_transition(
            run, AnalysisStatus.FAILED, failure_message=message, finished_at=timezone.now()
        )
        analysis_spend_record(run, seconds=time.monotonic() - started)
    return run


def exact_duplicate_groups(run: AnalysisRun) -> dict[str, list[int]]:
    """The run's exact-duplicate groups: group key -> example ids, lowest id first."""
    groups: dict[str, list[int]] = defaultdict(list)
    rows = run.findings.filter(kind=EXACT_DUPLICATE).values_list("group_key", "example_id")
    for group_key, example_id in rows.order_by("example_id"):
        groups[group_key].append(example_id)
    return dict(groups)


def exact_duplicates_reject(*, run: AnalysisRun, user: User) -> int:
    """Reject all but one example of each exact-duplicate group found by ``run``.

    Keeps the earliest approved example of a group, else the earliest one. Refused when any
    analysed example changed since the run (the groups might no longer be duplicates).
    Every rejection is an ordinary review decision, with a comment naming the kept example.
    """
    with transaction.atomic():
        run = AnalysisRun.objects.select_for_update().get(pk=run.pk)
        if run.status != AnalysisStatus.SUCCEEDED:
            raise ConflictError(f"Analysis run {run.pk} has not finished; nothing was rejected.")
        # Lock every analysed example so none changes between the check and the rejections.
        locked = list(
            Example.objects.select_for_update()
            .filter(dataset_id=run.dataset_id, status__in=ANALYZED_STATUSES)
            .order_by("id")
        )
        rows = [(e.pk, e.messages, e.revision, e.status) for e in locked]
        if examples_fingerprint(rows) != run.stats.get("fingerprint"):
            raise ConflictError(
                f"Examples changed since analysis run {run.pk}; run the analysis again before "
                "rejecting duplicates. Nothing was rejected.",
                extra={"field": "run"},
            )
        by_id = {example.pk: example for example in locked}
        now = timezone.now()
        changed: list[Example] = []
        decisions: list[ReviewDecision] = []
        for members in exact_duplicate_groups(run).values():
            approved = [pk for pk in members if by_id[pk].status == ExampleStatus.APPROVED]
            kept = approved[0] if approved else members[0]
            for pk in members:
                if pk == kept:
                    continue
                example = by_id[pk]
                answer = assistant_answer(example.messages)
                example_transition(example, ExampleStatus.REJECTED, save=False, updated_at=now)
                changed.append(example)
                decisions.append(
                    ReviewDecision(
                        example=example,
                        reviewer=user,
                        action=ReviewAction.REJECT,
                        previous_answer=answer,
                        new_answer=answer,
                        comment=f"Exact duplicate of example {kept}, which was kept "
                        f"(bulk fix from analysis run {run.pk}).",
                    )
                )
        Example.objects.bulk_update(changed, ["status", "revision", "updated_at"], batch_size=2000)
        ReviewDecision.objects.bulk_create(decisions, batch_size=2000)
    return len(changed)


def readiness_base_model(dataset_id: int) -> BaseModel | None:
    """The model of the dataset's latest finished analysis, else the smallest active one."""
    latest = (
        AnalysisRun.objects.filter(dataset_id=dataset_id, status=AnalysisStatus.SUCCEEDED)
        .order_by("-id")
        .first()
    )
    if latest is not None:
        model = base_model_by_key(latest.base_model_key)
        if model is not None:
            return model
    return BaseModel.objects.filter(is_active=True).order_by("parameter_count", "key").first()


def version_label_readiness(
    version: DatasetVersion, *, items: Sequence[tuple[Any, str]] | None = None
) -> dict[str, Any] | None:
    """Each label's training and validation examples in the version (stats.label_readiness),
    None unless it was frozen under a label-set contract: as the freeze or the readiness
    report stored it, else counted from the frozen items (``items``: their (messages, split)
    pairs, when the caller has them already)."""
    if items is None:
        if "per_label" in version.readiness:
            stored: dict[str, Any] | None = version.readiness["per_label"]
            return stored
        items = list(version.items.values_list("messages", "split"))
    labels = answer_labels(
        version.answer_contract, (assistant_answer(messages) for messages, _ in items)
    )
    if labels is None:
        return None
    return label_readiness(labels, [split for _, split in items])


def dataset_version_readiness(*, version: DatasetVersion) -> dict[str, Any]:
    """The version's readiness report, computed from its frozen items on first use and kept.

    The frozen content never changes, so neither does the report; it is stored once. A report
    stored before tokens per epoch meant the training split alone is computed again.
    """
    stored_means = version.readiness.get("tokens", {}).get("tokens_per_epoch_means")
    if stored_means == TOKENS_PER_EPOCH_MEANS and "per_label" in version.readiness:
        return version.readiness
    items = list(
        version.items.order_by("position").values_list(
            "position", "example_id", "messages", "split"
        )
    )
    base_model = readiness_base_model(version.dataset_id)
    price = base_model.training_usd_per_million_tokens if base_model else None
    counter, tokenizer_source = counter_or_estimate(base_model)
    result = analyze_conversations(
        [messages for _, _, messages, _ in items],
        counter=counter,
        context_window=base_model.context_window if base_model else None,
        strict_alternation=bool(base_model and base_model.provider in ALTERNATING_PROVIDERS),
        names=[f"example {pk}" if pk else f"item {pos}" for pos, pk, _, _ in items],
        usd_per_million_tokens=price,
        contract=version.answer_contract,
    )
    stats = result.stats
    per_label = version_label_readiness(version, items=[(m, split) for _, _, m, split in items])
    report: dict[str, Any] = {
        "examples": version.example_count,
        **readiness_verdict(version.example_count, per_label),
        "per_label": per_label,
        "validation_split": {
            "present": version.validation_count > 0,
            "train": version.train_count,
            "validation": version.validation_count,
            "fraction": version.validation_fraction,
        },
        "base_model": tokenizer_source,
        "tokens": {
            "tokenizer": stats["tokenizer"],
            "prompt_tokens": stats["prompt_tokens"],
            "answer_tokens": stats["answer_tokens"],
            **epoch_totals(
                version_tokens_per_epoch(version=version, counter=counter),
                usd_per_million_tokens=price,
            ),
            "tokens_per_epoch_means": TOKENS_PER_EPOCH_MEANS,
        },
        "findings": stats["findings"],
        "answer_contract": describe_contract(version.answer_contract),
        "contract_override": version.contract_override,
        "examples_with_errors": stats["examples_with_errors"],
        "examples_with_findings": stats["examples_with_findings"],
        "computed_at": timezone.now().isoformat(),
    }
    # A racing request computes the same report, so whichever stores last changes nothing.
    DatasetVersion.objects.filter(pk=version.pk).update(readiness=report)
    version.readiness = report
    return report
