"""An evaluation's spends for the ledger (``ftportal.spending``), written with the rows they
paid for, in the same transaction: each stored batch of a candidate's answers, each stored
batch of the judge's verdicts.

A hosted model's batch is its prompt and completion tokens at the candidate's (or judge's)
prices, as the run recorded them when it was created (unpriced when it has none); a local
model's is the worker time the batch took at this worker's hourly rate. What an attempt asked
for is spent even when another attempt stored the same item first, so the batch's spend is
written whatever the insert kept.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from catalog.models import Provider
from ftportal.spending import SpendKind, spend_record, token_spends, worker_time_spend

from .models import Candidate, CandidateKind, EvalRun


def runs_locally(candidate: Candidate) -> bool:
    """Whether the candidate answers on this worker (a local base model, or a version or
    checkpoint of one) rather than at a provider."""
    base = candidate.base_model
    local_kinds = (CandidateKind.BASE, CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT)
    return candidate.kind in local_kinds and base is not None and base.provider == Provider.LOCAL


def billing_endpoint_id(candidate: Candidate) -> int | None:
    """The registered endpoint a hosted candidate's calls go through, whose provider bills
    them (as ``evaluation.runner.chat_for`` picks it): its own endpoint for a model named at
    an endpoint, its base model's for a hosted base model or a fine-tune of one; None for
    what answers on this worker."""
    if candidate.kind in (CandidateKind.OPENAI_COMPATIBLE, CandidateKind.ANTHROPIC):
        return candidate.endpoint_id
    base = candidate.base_model
    if base is None or runs_locally(candidate):
        return None
    return base.endpoint_id


def _batch_spends_record(
    *,
    run: EvalRun,
    kind: SpendKind,
    event: str,
    origin: str,
    on_this_worker: bool,
    seconds: float,
    tokens: tuple[int, int],
    prices: tuple[Decimal | None, Decimal | None],
    priced_by: str,
    version: int | None,
    endpoint_id: int | None,
) -> None:
    """A stored batch's spends: its worker time when the model ran on this worker, else its
    tokens at ``prices``, billed by the endpoint ``endpoint_id``."""
    if on_this_worker:
        spends = [
            worker_time_spend(
                project_id=run.project_id,
                kind=kind,
                seconds=seconds,
                event=f"{event}:time",
                origin=origin,
                model_version_id=version,
            )
        ]
    else:
        known = "" if None in prices else ", as the run recorded them"
        spends = token_spends(
            project_id=run.project_id,
            kind=kind,
            event=event,
            origin=origin,
            tokens=tokens,
            prices=prices,
            price_source=f"{priced_by} prices{known}",
            model_version_id=version,
            endpoint_id=endpoint_id,
        )
    for spend in spends:
        spend_record(replace(spend, eval_run_id=run.pk))


def answers_spend_record(
    *,
    run: EvalRun,
    attempt: int,
    candidate: Candidate,
    first_item_id: int,
    count: int,
    tokens: tuple[int, int],
    seconds: float,
) -> None:
    """The spend of one stored batch of ``count`` answers (starting at item ``first_item_id``):
    ``tokens`` (prompt, completion) for a hosted candidate, ``seconds`` for a local one."""
    _batch_spends_record(
        run=run,
        kind=SpendKind.EVALUATION,
        event=(
            f"eval_run:{run.pk}:attempt:{attempt}:candidate:{candidate.pk}:"
            f"items:{first_item_id}+{count}"
        ),
        origin=f"Evaluation {run.pk}: {candidate.label}, {count} answers",
        on_this_worker=runs_locally(candidate),
        seconds=seconds,
        tokens=tokens,
        prices=(candidate.input_usd_per_million_tokens, candidate.output_usd_per_million_tokens),
        priced_by=f"the candidate {candidate.label}'s",
        version=candidate.model_version_id,
        endpoint_id=billing_endpoint_id(candidate),
    )


def verdicts_spend_record(
    *,
    run: EvalRun,
    attempt: int,
    pair: tuple[Candidate, Candidate],
    first_item_id: int,
    count: int,
    tokens: tuple[int, int],
    seconds: float,
) -> None:
    """The spend of one stored batch of the judge's ``count`` verdicts on ``pair``: ``tokens``
    at the run's judge prices for a hosted judge, ``seconds`` of worker time for a local one."""
    reference, other = pair
    _batch_spends_record(
        run=run,
        kind=SpendKind.JUDGING,
        event=(
            f"eval_run:{run.pk}:attempt:{attempt}:judge:{reference.pk}-{other.pk}:"
            f"items:{first_item_id}+{count}"
        ),
        origin=f"Evaluation {run.pk}: the judge {run.judge_model}, {count} verdicts",
        # A judge of kind "base" is a local catalog model (evaluation.runner._judge_chat).
        on_this_worker=run.judge_kind == CandidateKind.BASE,
        seconds=seconds,
        tokens=tokens,
        prices=(run.judge_input_usd_per_million_tokens, run.judge_output_usd_per_million_tokens),
        priced_by=f"the judge {run.judge_model}'s",
        version=None,
        endpoint_id=run.judge_endpoint_id,
    )
