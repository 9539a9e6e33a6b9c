"""The gateway's spends, priced where its request log is written (``serving.request_log``), off
the request path: each batch's rows get their cost, and the batch's tokens become the ledger's
serving spends (``ftportal.spending``), in the transaction that stores the rows.

A row is priced when what answered it is billed per token by a provider: a hosted fine-tuned
version (its ``ft:`` id) or a hosted base model that a fallback route sent it to, at the prices
in force when the batch is written (``ftportal.spending.token_price``, the ledger's dated
prices). A version answered on our own hardware (the local model server, a vLLM host) costs
machine time, not tokens; its rows keep no cost and no token spend is written for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from catalog.models import BaseModel, Provider
from ftportal.spending import (
    AMOUNT_PLACES,
    TOKENS_PER_PRICE,
    SpendKind,
    TokenPrice,
    spend_record,
    token_price,
    token_spends,
)
from registry.models import ModelVersion

Row = dict[str, Any]


@dataclass(frozen=True)
class Billed:
    """What a provider bills a served version or base model under: its model id, and the
    registered endpoint the gateway calls it through (the base model's: ``serving.backends``),
    for reconciling with that provider's own cost report."""

    model: str
    endpoint_id: int | None


def _billed_models(rows: Sequence[Row]) -> dict[tuple[str, int], Billed]:
    """How each served version or base model is billed; absent for what answers on our own
    hardware."""
    version_ids = {row["served_version_id"] for row in rows if row["served_version_id"]}
    base_ids = {row["served_base_model_id"] for row in rows if row["served_base_model_id"]}
    billed: dict[tuple[str, int], Billed] = {}
    for pk, fine_tuned, endpoint_id in ModelVersion.objects.filter(pk__in=version_ids).values_list(
        "pk", "fine_tuned_model", "base_model__endpoint_id"
    ):
        if fine_tuned:
            billed[("version", pk)] = Billed(fine_tuned, endpoint_id)
    for pk, key, provider, endpoint_id in BaseModel.objects.filter(pk__in=base_ids).values_list(
        "pk", "key", "provider", "endpoint_id"
    ):
        if provider != Provider.LOCAL:
            billed[("base", pk)] = Billed(key, endpoint_id)
    return billed


def _served(row: Row) -> tuple[str, int] | None:
    # A fallback to a base model leaves served_version empty (serving.models.RequestLog).
    if row["served_version_id"]:
        return ("version", row["served_version_id"])
    if row["served_base_model_id"]:
        return ("base", row["served_base_model_id"])
    return None


def _row_cost(row: Row, price: TokenPrice) -> Decimal | None:
    given, taken = price.input_usd_per_million_tokens, price.output_usd_per_million_tokens
    if given is None or taken is None:
        return None
    total = row["prompt_tokens"] * given + row["completion_tokens"] * taken
    return (total / TOKENS_PER_PRICE).quantize(AMOUNT_PLACES)


def serving_rows_priced(rows: Sequence[Row]) -> None:
    """Give each answered row of a batch its cost, and report the batch's token spends: per
    project and what served, its input and its output tokens (unpriced where the price table
    has no price for that side). Called in the transaction that stores the rows."""
    answered = [row for row in rows if row["prompt_tokens"] is not None and _served(row)]
    if not answered:
        return
    billed_models = _billed_models(answered)
    moment = max(row["created_at"] for row in answered)
    # The price of each billed model, read once a batch.
    prices: dict[str, TokenPrice | None] = {}
    groups: dict[tuple[int, tuple[str, int]], list[Row]] = {}
    for row in answered:
        served = _served(row)
        assert served is not None
        billed = billed_models.get(served)
        if billed is None:
            continue  # our own hardware: machine time, not tokens
        model = billed.model
        if model not in prices:
            prices[model] = token_price(model, moment)
        price = prices[model]
        if price is not None and row["cost"] is None:
            row["cost"] = _row_cost(row, price)
            row["cost_known"] = row["cost"] is not None
        groups.setdefault((row["project_id"], served), []).append(row)
    batch = answered[0]["request_id"]
    for (project_id, served), group in groups.items():
        billed = billed_models[served]
        _group_spends_record(project_id, served, group, billed, prices[billed.model], batch)


def _group_spends_record(
    project_id: int,
    served: tuple[str, int],
    group: list[Row],
    billed: Billed,
    price: TokenPrice | None,
    batch: str,
) -> None:
    kind, pk = served
    model = billed.model
    tokens = (
        sum(row["prompt_tokens"] for row in group),
        sum(row["completion_tokens"] or 0 for row in group),
    )
    prices = (
        (price.input_usd_per_million_tokens, price.output_usd_per_million_tokens)
        if price is not None
        else (None, None)
    )
    spends = token_spends(
        project_id=project_id,
        kind=SpendKind.SERVING,
        event=f"serving:{batch}:{project_id}:{kind}:{pk}",
        origin=f"Gateway: {len(group)} requests to {model}",
        tokens=tokens,
        prices=prices,
        price_source=price.source if price is not None else f"no price for {model}",
        model_version_id=pk if kind == "version" else None,
        endpoint_id=billed.endpoint_id,
        occurred_at=max(row["created_at"] for row in group),
    )
    for spend in spends:
        spend_record(spend)
