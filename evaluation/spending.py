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

from decimal import Decimal

from catalog.models import Provider
from ftportal.spending import (
    SECONDS_PER_PRICE,
    TOKENS_PER_PRICE,
    Spend,
    SpendKind,
    seconds_quantity,
    spend_record,
    worker_hourly_rate,
)
from ftportal.spending import SpendUnit as Unit

from .models import Candidate, CandidateKind, EvalRun


def runs_locally(candidate: Candidate) -> bool:
    """Whether the candidate answers on this worker (a local base model, or a version or
    checkpoint of one) rather than at a provider."""
    base = candidate.base_model
    local_kinds = (CandidateKind.BASE, CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT)
    return candidate.kind in local_kinds and base is not None and base.provider == Provider.LOCAL


def _tokens_spends(
    *,
    run: EvalRun,
    kind: SpendKind,
    event: str,
    origin: str,
    tokens: tuple[int, int],
    prices: tuple[Decimal | None, Decimal | None],
    priced_by: str,
    model_version_id: int | None,
) -> list[Spend]:
    spends = []
    for side, count, price in zip(("input", "output"), tokens, prices, strict=True):
        if count == 0:
            continue
        spends.append(
            Spend(
                project_id=run.project_id,
                kind=kind,
                quantity=Decimal(count),
                unit=Unit.TOKENS,
                price=price,
                price_per=TOKENS_PER_PRICE,
                price_source=f"{priced_by} {side} price, as the run recorded it"
                if price is not None
                else f"{priced_by} has no {side} price",
                event=f"{event}:{side}",
                origin=f"{origin}, {side} tokens",
                model_version_id=model_version_id,
            )
        )
    return spends


def _time_spend(
    *, run: EvalRun, kind: SpendKind, event: str, origin: str, seconds: float, version: int | None
) -> Spend:
    rate, source = worker_hourly_rate()
    return Spend(
        project_id=run.project_id,
        kind=kind,
        quantity=seconds_quantity(seconds),
        unit=Unit.COMPUTE_SECONDS,
        price=rate,
        price_per=SECONDS_PER_PRICE,
        price_source=source,
        event=f"{event}:time",
        origin=origin,
        model_version_id=version,
    )


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
    event = (
        f"eval_run:{run.pk}:attempt:{attempt}:candidate:{candidate.pk}:"
        f"items:{first_item_id}+{count}"
    )
    origin = f"Evaluation {run.pk}: {candidate.label}, {count} answers"
    if runs_locally(candidate):
        spends = [
            _time_spend(
                run=run,
                kind=SpendKind.EVALUATION,
                event=event,
                origin=origin,
                seconds=seconds,
                version=candidate.model_version_id,
            )
        ]
    else:
        spends = _tokens_spends(
            run=run,
            kind=SpendKind.EVALUATION,
            event=event,
            origin=origin,
            tokens=tokens,
            prices=(
                candidate.input_usd_per_million_tokens,
                candidate.output_usd_per_million_tokens,
            ),
            priced_by=f"the candidate {candidate.label}'s",
            model_version_id=candidate.model_version_id,
        )
    for spend in spends:
        spend_record(spend)


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
    event = (
        f"eval_run:{run.pk}:attempt:{attempt}:judge:{reference.pk}-{other.pk}:"
        f"items:{first_item_id}+{count}"
    )
    origin = f"Evaluation {run.pk}: the judge {run.judge_model}, {count} verdicts"
    if run.judge_kind == CandidateKind.BASE:  # a local judge (catalog base models are local)
        spends = [
            _time_spend(
                run=run,
                kind=SpendKind.JUDGING,
                event=event,
                origin=origin,
                seconds=seconds,
                version=None,
            )
        ]
    else:
        spends = _tokens_spends(
            run=run,
            kind=SpendKind.JUDGING,
            event=event,
            origin=origin,
            tokens=tokens,
            prices=(
                run.judge_input_usd_per_million_tokens,
                run.judge_output_usd_per_million_tokens,
            ),
            priced_by=f"the judge {run.judge_model}'s",
            model_version_id=None,
        )
    for spend in spends:
        spend_record(spend)
