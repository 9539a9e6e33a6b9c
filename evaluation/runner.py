"""The worker side of an evaluation: claim the run, answer every item with every candidate,
score and store each answer as it arrives, then write the report.

Answers are stored as they come (a local batch at a time, hosted answers in small batches as
they arrive), so a run whose worker died resumes where it stopped: items with a stored result
are never asked again.
Like training jobs, a run is owned by one attempt at a time and every write checks that the
attempt still owns it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.adapters import (
    base_chat_model,
    fine_tuned_chat_model,
    hosted_chat_model,
    local_chat_model,
)
from catalog.models import Provider
from catalog.selectors import base_model_by_key
from datasets.models import DatasetVersionExample, Split
from ftportal.collector import existing_objects_frozen
from ftportal.errors import ApplicationError
from ftportal.ownership import attempt_claim, heartbeat_for
from providers.base import (
    ChatItemError,
    ChatModel,
    ChatResult,
    Conversation,
    LabelScorer,
    ProviderError,
)

from .contracts import constraint_for, contract_for_run, scored_labels
from .judge import DEFAULT_RUBRIC, JudgeItem, PairVerdict, judge_pairwise
from .models import (
    Candidate,
    CandidateKind,
    EvalResult,
    EvalRun,
    EvalSplit,
    EvalStatus,
    JudgeVerdict,
    Prompting,
)
from .prompting import (
    PromptTemplate,
    answer_of,
    few_shot_prompt,
    pick_shots,
    prompt_of,
    shot_turns,
    templated_prompt,
)
from .report import candidate_summary_of, run_report
from .scoring import Checks, score_answer
from .services import transition
from .spending import answers_spend_record, verdicts_spend_record

logger = logging.getLogger(__name__)

# Local candidates and judges answer this many items per batch; a candidate's answers are saved
# after each, so this is also the most work a crash can lose.
LOCAL_BATCH_SIZE = 32
# Prompts per label-scoring pass: each carries every label's tokens (a few hundred positions for
# 60 labels), so a pass of 8 is already as large as a generation batch of 32.
LABEL_SCORING_BATCH_SIZE = 8
MAX_REFUSALS_IN_A_ROW = 3
FLUSH_ROWS = 50
FLUSH_SECONDS = 0.5
Row = TypeVar("Row")


class AttemptSuperseded(Exception):
    """The run is no longer this attempt's: the reaper gave it to another worker, or a person
    cancelled it."""


def _owned(run_id: int, attempt: int) -> QuerySet[EvalRun]:
    return EvalRun.objects.filter(pk=run_id, attempts=attempt, status=EvalStatus.RUNNING)


@contextlib.contextmanager
def _while_owned(run_id: int, attempt: int) -> Iterator[None]:
    """A transaction in which this attempt still owns the run (its row locked till the end);
    AttemptSuperseded when the reaper has given the run to another attempt or it was
    cancelled."""
    with transaction.atomic():
        if not _owned(run_id, attempt).select_for_update().exists():
            raise AttemptSuperseded
        yield


def _stop_unless_owned(run_id: int, attempt: int) -> None:
    """Checked before each batch: a cancelled run stops before generating another one."""
    if not _owned(run_id, attempt).exists():
        raise AttemptSuperseded


def _claim(run_id: int) -> EvalRun | None:
    with transaction.atomic():
        run = EvalRun.objects.select_for_update().get(pk=run_id)
        if run.status != EvalStatus.QUEUED:
            logger.info("Evaluation %s is %s; not running it", run.pk, run.status)
            return None
        attempt_claim(run)
        transition(run, EvalStatus.RUNNING)
        return run


def _test_set(run: EvalRun) -> QuerySet[DatasetVersionExample]:
    items = run.dataset_version.items.order_by("position")
    if run.split == EvalSplit.VALIDATION:
        items = items.filter(split=Split.VALIDATION)
    return items


def test_items(run: EvalRun) -> list[DatasetVersionExample]:
    return list(_test_set(run))


def eval_run_execute(*, run_id: int) -> EvalRun | None:
    """Run (or resume) an evaluation; None when this worker does not own it."""
    run = _claim(run_id)
    if run is None:
        return None
    attempt = run.attempts
    try:
        with heartbeat_for(lambda: _owned(run_id, attempt), name=f"heartbeat-eval-{run_id}"):
            items = test_items(run)
            if not items:
                raise ApplicationError(f"The test set of {run.dataset_version} is empty.")
            candidates = list(
                run.candidates.select_related(
                    "model_version", "checkpoint", "base_model", "shots_version"
                )
            )
            with existing_objects_frozen():
                for candidate in candidates:
                    _answer_all(run, attempt, candidate, items)
                if run.judge_kind:
                    _judge_all(run, attempt, items)
            report = run_report(run)
    except AttemptSuperseded:
        status = EvalRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if status == EvalStatus.CANCELLED:
            logger.info("Evaluation %s was cancelled; attempt %s stops", run_id, attempt)
        else:
            logger.warning("Evaluation %s: attempt %s was superseded; stopping", run_id, attempt)
        return None
    except (ApplicationError, ProviderError, RuntimeError, ValueError, OSError) as exc:
        logger.exception("Evaluation %s failed", run_id)
        return _finish(run_id, attempt, EvalStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    return _finish(run_id, attempt, EvalStatus.SUCCEEDED, report=report, error="")


def _finish(run_id: int, attempt: int, target: EvalStatus, **changes: object) -> EvalRun | None:
    with transaction.atomic():
        run = _owned(run_id, attempt).select_for_update().first()
        if run is None:
            return None
        transition(run, target, **changes)
        return run


# --- prompts ------------------------------------------------------------------------------


def _drawn_shots(
    candidate: Candidate, items: Sequence[DatasetVersionExample]
) -> list[DatasetVersionExample]:
    """The few-shot examples drawn for the candidate, as items of their source version's
    training split (so the record of what was sent can name their positions)."""
    source = candidate.shots_version or candidate.run.dataset_version
    pool = list(source.items.filter(split=Split.TRAIN).order_by("position"))
    try:
        drawn = pick_shots(
            [item.messages for item in pool],
            k=candidate.few_shot_k,
            seed=candidate.few_shot_seed,
            exclude=[item.messages for item in items],
        )
    except ValueError as error:
        raise ApplicationError(f"{candidate.label}: {error}") from error
    # pick_shots hands back the pool's own conversations, so each one's item is found by
    # identity (two items with the same messages stay two).
    by_identity = {id(item.messages): item for item in pool}
    return [by_identity[id(shot)] for shot in drawn]


def _shots_for(candidate: Candidate, items: Sequence[DatasetVersionExample]) -> list[Conversation]:
    return [shot.messages for shot in _drawn_shots(candidate, items)]


def candidate_prompts(
    candidate: Candidate,
    items: Sequence[DatasetVersionExample],
    all_items: Sequence[DatasetVersionExample],
) -> list[Conversation]:
    """What the candidate is asked for each item: the item's prompt, with the few-shot examples
    (drawn once per candidate, the same for every item) and the candidate's template."""
    shots = _shots_for(candidate, all_items) if candidate.prompting == Prompting.FEW_SHOT else []
    template = PromptTemplate(system=candidate.system_prompt or None, user=candidate.user_template)
    templated = template != PromptTemplate()
    prompts = []
    for item in items:
        prompt = few_shot_prompt(item.messages, shots) if shots else prompt_of(item.messages)
        prompts.append(templated_prompt(prompt, template) if templated else prompt)
    return prompts


# --- what each candidate is sent ---------------------------------------------------------

# Distinct system prompts of the items a record quotes when the items keep their own.
RECORDED_ITEM_SYSTEM_PROMPTS = 3


def _system_prompt_record(
    candidate: Candidate, items: Sequence[DatasetVersionExample]
) -> dict[str, object]:
    """Which system prompt the candidate's prompts carry: its own (which replaces the items'),
    or the items' own, kept as they are (quoted up to a few distinct ones), or none."""
    if candidate.system_prompt:
        return {"source": "candidate", "text": candidate.system_prompt}
    distinct: dict[str, None] = {}
    for item in items:
        system = "\n\n".join(
            str(m.get("content", "")) for m in prompt_of(item.messages) if m.get("role") == "system"
        )
        if system:
            distinct[system] = None
    if not distinct:
        return {"source": "none"}
    texts = list(distinct)
    return {
        "source": "items",
        "texts": texts[:RECORDED_ITEM_SYSTEM_PROMPTS],
        "distinct": len(texts),
    }


def prompt_record_of(
    candidate: Candidate,
    items: Sequence[DatasetVersionExample],
    first: tuple[DatasetVersionExample, Conversation],
) -> dict[str, object]:
    """What the candidate is sent, for its page and the API: the system prompt, the user
    template, the few-shot examples drawn (their turns as sent, their positions and their
    source version), and ``first``, the first item it answers with its prompt as sent."""
    few_shot = candidate.prompting == Prompting.FEW_SHOT
    shots = _drawn_shots(candidate, items) if few_shot else []
    source = candidate.shots_version or candidate.run.dataset_version
    item, prompt = first
    return {
        "recorded_at": timezone.now().isoformat(),
        "prompting": candidate.prompting,
        "system_prompt": _system_prompt_record(candidate, items),
        "user_template": candidate.user_template,
        "shots": [
            {"position": shot.position, "messages": shot_turns(shot.messages)} for shot in shots
        ],
        "shots_version": {"id": source.pk, "name": str(source)} if few_shot else None,
        "first_item": {"position": item.position, "messages": prompt},
    }


def _prompt_record_write(
    run: EvalRun,
    attempt: int,
    candidate: Candidate,
    items: Sequence[DatasetVersionExample],
    first: tuple[DatasetVersionExample, Conversation],
) -> None:
    """Record what the candidate is sent as it starts answering, once: a resumed run asks the
    same (the shots are drawn by seed), so the first record stands. Written only while this
    attempt owns the run."""
    if candidate.prompt_record:
        return
    record = prompt_record_of(candidate, items, first)
    Candidate.objects.filter(
        pk=candidate.pk, run__attempts=attempt, run__status=EvalStatus.RUNNING, run_id=run.pk
    ).update(prompt_record=record)


# --- models -------------------------------------------------------------------------------


def chat_for(candidate: Candidate) -> ChatModel:
    """The model that answers for this candidate (built by ``catalog.adapters``), with the
    credentials this worker holds."""
    who = candidate.label
    base = candidate.base_model
    in_flight = settings.FTPORTAL_EVAL_MAX_IN_FLIGHT
    if candidate.kind in (CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT):
        adapter, hosted_id = _fine_tuned_model_of(candidate)
        if base is None:
            raise ProviderError(f"{who}: no base model recorded.")
        return fine_tuned_chat_model(
            base_model=base,
            adapter_dir=adapter,
            hosted_model_id=hosted_id,
            who=who,
            max_in_flight=in_flight,
        )
    if candidate.kind == CandidateKind.BASE:
        if base is None:
            raise ProviderError(f"{who}: no base model recorded.")
        return base_chat_model(base_model=base, who=who, max_in_flight=in_flight)
    return hosted_chat_model(
        endpoint=candidate.endpoint, model=candidate.api_model, who=who, max_in_flight=in_flight
    )


def _fine_tuned_model_of(candidate: Candidate) -> tuple[str, str]:
    """(local adapter directory, hosted model id); one of them is set."""
    if candidate.model_version is not None:
        return candidate.model_version.adapter_dir, candidate.model_version.fine_tuned_model
    if candidate.checkpoint is not None:
        return candidate.checkpoint.path, candidate.checkpoint.provider_model_id
    raise ProviderError(f"{candidate.label}: nothing to load.")


# --- answering and storing ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float | None
    error: str = ""
    confidence: float | None = None


def _save(
    run: EvalRun,
    attempt: int,
    candidate: Candidate,
    answered: Sequence[tuple[DatasetVersionExample, Answer]],
    checks: Checks,
) -> None:
    """Store scored answers, if this attempt still owns the run. ignore_conflicts: an item
    another attempt stored first keeps that answer, so every item is scored once."""
    rows = [
        EvalResult(
            candidate=candidate,
            item=item,
            output=answer.text,
            error=answer.error,
            latency_seconds=answer.latency_seconds,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            confidence=answer.confidence,
            scores=score_answer(answer.text, answer_of(item.messages), checks),
        )
        for item, answer in answered
    ]
    answers = [answer for _, answer in answered]
    with _while_owned(run.pk, attempt):
        EvalResult.objects.bulk_create(rows, ignore_conflicts=True)
        _owned(run.pk, attempt).update(heartbeat_at=timezone.now())
        answers_spend_record(
            run=run,
            attempt=attempt,
            candidate=candidate,
            first_item_id=answered[0][0].pk,
            count=len(answered),
            tokens=(
                sum(answer.prompt_tokens for answer in answers),
                sum(answer.completion_tokens for answer in answers),
            ),
            seconds=sum(answer.latency_seconds or 0.0 for answer in answers),
        )


def _answer_all(
    run: EvalRun, attempt: int, candidate: Candidate, items: Sequence[DatasetVersionExample]
) -> None:
    done = set(candidate.results.values_list("item_id", flat=True))
    todo = [item for item in items if item.pk not in done]
    if todo:
        checks = Checks(
            regex=run.regex_check,
            contains=run.contains_check,
            contract=contract_for_run(run),
        )
        prompts = candidate_prompts(candidate, todo, items)
        _prompt_record_write(run, attempt, candidate, items, (todo[0], prompts[0]))
        chat = chat_for(candidate)
        started = time.monotonic()
        try:
            _answer_each(run, attempt, candidate, chat, todo, prompts, checks)
        finally:
            # Added up over attempts: a resumed run reports all the time it spent.
            Candidate.objects.filter(pk=candidate.pk).update(
                generation_seconds=Coalesce(F("generation_seconds"), 0.0)
                + (time.monotonic() - started)
            )
            chat.close()
    _summarise(candidate)


def _answer(generation: ChatResult) -> Answer:
    return Answer(
        generation.text,
        generation.prompt_tokens,
        generation.completion_tokens,
        generation.latency_seconds,
        confidence=generation.confidence,
    )


def _label_scorer(chat: ChatModel, candidate: Candidate) -> LabelScorer:
    if not isinstance(chat, LabelScorer):
        raise ProviderError(f"{candidate.label}: this model cannot rank labels by likelihood.")
    return chat


class _WrittenInBatches(Generic[Row]):
    """Hosted answers and judge verdicts arrive one by one from up to 50 requests in flight;
    one transaction each made storing, not the provider, the bottleneck (bench/hosted_eval.py
    measured 20 ms per answer under load, 5x the arrival rate). Rows are written every
    FLUSH_ROWS rows or FLUSH_SECONDS, whichever comes first, so a crash loses at most that
    much work. A row that arrives when a write is due writes the rows before it and waits for
    the next write: rows that arrive together (a local batch) are written together."""

    def __init__(self, write: Callable[[list[Row]], None]) -> None:
        self._write = write
        self._waiting: list[Row] = []
        self._last_flush = time.monotonic()

    def add(self, row: Row) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()
        self._waiting.append(row)
        if len(self._waiting) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._waiting:
            self._write(self._waiting)
            self._waiting = []
        self._last_flush = time.monotonic()


def _answer_each(
    run: EvalRun,
    attempt: int,
    candidate: Candidate,
    chat: ChatModel,
    todo: Sequence[DatasetVersionExample],
    prompts: Sequence[Conversation],
    checks: Checks,
) -> None:
    """Every item, stored as the answers arrive: a local model's a batch at a time, a hosted
    model's (all items concurrently) in small batches. Before each batch, what came in is
    stored and the run is checked to be still this attempt's, so a cancelled run stops
    before generating another batch. An item the provider refuses for good is stored as a
    failed (wrong) answer with the provider's message and the rest go on; running out of
    retries on rate limits fails the run, which can be resumed later without asking again for
    what was stored."""
    stored: _WrittenInBatches[tuple[DatasetVersionExample, Answer]] = _WrittenInBatches(
        lambda answered: _save(run, attempt, candidate, answered, checks)
    )
    constraint = constraint_for(candidate)
    labels = scored_labels(candidate)

    def before_batch() -> None:
        stored.flush()
        _stop_unless_owned(run.pk, attempt)

    answered: set[int] = set()
    refused_in_a_row = 0
    pending = list(range(len(todo)))
    while pending:

        def store(index: int, generation: ChatResult, asked: list[int] = pending) -> None:
            position = asked[index]
            stored.add((todo[position], _answer(generation)))
            answered.add(position)
            nonlocal refused_in_a_row
            refused_in_a_row = 0

        try:
            if labels is not None:
                _label_scorer(chat, candidate).score_labels_many(
                    [prompts[i] for i in pending],
                    labels,
                    batch_size=LABEL_SCORING_BATCH_SIZE,
                    before_batch=before_batch,
                    on_result=store,
                )
            else:
                chat.generate_many(
                    [prompts[i] for i in pending],
                    max_new_tokens=run.max_new_tokens,
                    batch_size=LOCAL_BATCH_SIZE,
                    constraint=constraint,
                    before_batch=before_batch,
                    on_result=store,
                )
        except ChatItemError as error:
            refused_in_a_row += 1
            # One refused item is that item's problem; several in a row with no answer between
            # them is the candidate's (a wrong key, an unknown model): stop paying for requests.
            if error.retryable or refused_in_a_row >= MAX_REFUSALS_IN_A_ROW:
                stored.flush()  # the answers that came in are paid for: keep them
                raise
            refused = pending[error.index]
            stored.add((todo[refused], Answer("", 0, 0, None, error=str(error))))
            answered.add(refused)
        stored.flush()
        pending = [i for i in pending if i not in answered]


# --- the judge ----------------------------------------------------------------------------


def _judge_all(run: EvalRun, attempt: int, items: Sequence[DatasetVersionExample]) -> None:
    """The judge compares the reference candidate (the first) with each other one on every
    item both answered; verdicts already stored are not asked for again."""
    candidates = list(run.candidates.all())
    reference, others = candidates[0], candidates[1:]
    if not others:
        return
    outputs = {
        (candidate_id, item_id): output
        for candidate_id, item_id, output in EvalResult.objects.filter(
            candidate__run=run
        ).values_list("candidate_id", "item_id", "output")
    }
    chat = _judge_chat(run)
    try:
        for other in others:
            judged_items = set(
                JudgeVerdict.objects.filter(candidate_a=reference, candidate_b=other).values_list(
                    "item_id", flat=True
                )
            )
            todo = [
                item
                for item in items
                if item.pk not in judged_items
                and (reference.pk, item.pk) in outputs
                and (other.pk, item.pk) in outputs
            ]
            _judge_pair(run, attempt, chat, reference, other, todo, outputs)
    finally:
        chat.close()


def _judge_chat(run: EvalRun) -> ChatModel:
    if run.judge_kind == CandidateKind.BASE:
        base = base_model_by_key(run.judge_model)
        if base is None or base.provider != Provider.LOCAL:
            raise ProviderError(f"The judge: no local model {run.judge_model!r} in the catalog.")
        return local_chat_model(base_model=base)
    return hosted_chat_model(
        endpoint=run.judge_endpoint,
        model=run.judge_model,
        who="The judge",
        max_in_flight=settings.FTPORTAL_EVAL_MAX_IN_FLIGHT,
    )


def _judge_pair(
    run: EvalRun,
    attempt: int,
    chat: ChatModel,
    reference: Candidate,
    other: Candidate,
    todo: Sequence[DatasetVersionExample],
    outputs: dict[tuple[int, int], str],
) -> None:
    questions = [
        JudgeItem(
            request=prompt_of(item.messages),
            reference=answer_of(item.messages),
            answer_a=outputs[(reference.pk, item.pk)],
            answer_b=outputs[(other.pk, item.pk)],
        )
        for item in todo
    ]

    # A local judge's spend is its time: each batch of verdicts took what passed since the last.
    last_write = [time.monotonic()]

    def write(rows: list[JudgeVerdict]) -> None:
        now = time.monotonic()
        with _while_owned(run.pk, attempt):
            JudgeVerdict.objects.bulk_create(rows, ignore_conflicts=True)
            verdicts_spend_record(
                run=run,
                attempt=attempt,
                pair=(reference, other),
                first_item_id=rows[0].item_id,
                count=len(rows),
                tokens=(
                    sum(row.prompt_tokens for row in rows),
                    sum(row.completion_tokens for row in rows),
                ),
                seconds=now - last_write[0],
            )
        last_write[0] = now

    stored = _WrittenInBatches(write)

    def store(index: int, verdict: PairVerdict) -> None:
        stored.add(
            JudgeVerdict(
                run=run,
                candidate_a=reference,
                candidate_b=other,
                item=todo[index],
                outcome=verdict.outcome,
                original=verdict.original or "",
                swapped=verdict.swapped or "",
                original_reply=verdict.original_reply,
                swapped_reply=verdict.swapped_reply,
                prompt_tokens=verdict.prompt_tokens,
                completion_tokens=verdict.completion_tokens,
            )
        )

    try:
        judge_pairwise(
            chat,
            questions,
            rubric=run.judge_rubric or DEFAULT_RUBRIC,
            max_new_tokens=run.judge_max_new_tokens,
            batch_size=LOCAL_BATCH_SIZE,
            on_result=store,
        )
    finally:
        stored.flush()  # verdicts that came in are paid for, even when the judge then failed


def _summarise(candidate: Candidate) -> None:
    summary = candidate_summary_of(candidate)
    Candidate.objects.filter(pk=candidate.pk).update(
        metrics=summary,
        example_count=summary.get("examples", 0),
        failed_count=summary.get("failed", 0),
    )


def progress(run: EvalRun) -> tuple[int, int]:
    """(answers stored, answers the run needs)."""
    total = _test_set(run).count() * run.candidates.count()
    done = EvalResult.objects.filter(candidate__run=run).count()
    return done, total
