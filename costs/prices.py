"""Dated token prices: imported from litellm's machine-readable price table, overridden by hand,
and read back as they were in force at any moment.

litellm's ``model_prices_and_context_window_backup.json`` (MIT) ships with the litellm package,
which the project installs for its data files only (requirements-data.txt; litellm is never
imported). Its prices are dollars per token as JSON numbers; here they are Decimal dollars per
million tokens. An import adds a dated row only for a model whose price changed (or is new), so
rows already written keep the price that was in force when they were written, and a ledger row
keeps its own copy anyway. Manual rows (a lead's override) win over the table's from their date
on, and no import touches them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog.models import BaseModel
from ftportal.errors import ApplicationError
from ftportal.spending import TokenPrice

from .models import Price, PriceOrigin

TABLE_FILE = "model_prices_and_context_window_backup.json"
MILLION = Decimal(1_000_000)
# What a Price row keeps (its columns' decimal places): the table's floats carry noise below it
# (2.9999900000000002e-06 a token), which a row could not store and a re-import would then see
# as a change every time.
PRICE_PLACES = Decimal("0.00000001")
# The table prices embeddings, images, audio and more; the product calls chat models only.
CHAT_MODES = ("chat", "completion", "responses")


class PriceTableError(ApplicationError):
    """A price table that cannot be read, with where (file, model, field)."""


@dataclass(frozen=True)
class TablePrice:
    model: str
    provider: str
    input_usd_per_million_tokens: Decimal | None
    output_usd_per_million_tokens: Decimal | None


@dataclass(frozen=True)
class PricesImported:
    added: int
    unchanged: int
    source: str


def price_table_path() -> Path:
    """The table file of the installed litellm package (found, not imported)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise PriceTableError("litellm's price table is not installed (requirements-data.txt).")
    return Path(next(iter(spec.submodule_search_locations))) / TABLE_FILE


def price_table_source(path: Path) -> str:
    """How an import names its figures: the package version when it is the installed table."""
    if path == price_table_path():
        return f"litellm {importlib.metadata.version('litellm')} price table"
    return f"price table {path.name}"


def _per_million(path: Path, model: str, field: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceTableError(f"{path}: {model}: {field} is not a number: {value!r}.")
    try:
        # repr, not the float itself: 1.5e-07 is meant as 0.00000015, not its binary neighbour.
        per_token = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise PriceTableError(f"{path}: {model}: {field} is not a number: {value!r}.") from None
    if per_token < 0:
        raise PriceTableError(f"{path}: {model}: {field} is negative: {value!r}.")
    return (per_token * MILLION).quantize(PRICE_PLACES).normalize()


def price_table_read(path: Path) -> list[TablePrice]:
    """The chat models' token prices in a table file in litellm's format."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PriceTableError(f"{path}: cannot be read: {error}.") from None
    except json.JSONDecodeError as error:
        raise PriceTableError(f"{path}: line {error.lineno}: not JSON: {error.msg}.") from None
    if not isinstance(table, dict):
        raise PriceTableError(f"{path}: not an object of models.")
    prices = []
    for model, entry in table.items():
        if model == "sample_spec" or not isinstance(entry, dict):
            continue
        if entry.get("mode") not in CHAT_MODES:
            continue
        given = _per_million(path, model, "input_cost_per_token", entry.get("input_cost_per_token"))
        taken = _per_million(
            path, model, "output_cost_per_token", entry.get("output_cost_per_token")
        )
        if given is None and taken is None:
            continue
        prices.append(TablePrice(model, str(entry.get("litellm_provider", "")), given, taken))
    return prices


def _latest_table_prices() -> dict[str, Price]:
    latest: dict[str, Price] = {}
    for price in Price.objects.filter(origin=PriceOrigin.TABLE).order_by(
        "model", "-effective_from", "-id"
    ):
        latest.setdefault(price.model, price)
    return latest


def prices_import(*, path: Path | None = None, now: datetime | None = None) -> PricesImported:
    """Add a dated row for every chat model in the table whose price is new or changed since
    the last import; nothing else is written (manual rows are never touched)."""
    table_path = path or price_table_path()
    source = price_table_source(table_path)
    table = price_table_read(table_path)
    moment = now or timezone.now()
    with transaction.atomic():
        latest = _latest_table_prices()
        added = [
            Price(
                model=price.model,
                provider=price.provider,
                input_usd_per_million_tokens=price.input_usd_per_million_tokens,
                output_usd_per_million_tokens=price.output_usd_per_million_tokens,
                origin=PriceOrigin.TABLE,
                source=source,
                effective_from=moment,
            )
            for price in table
            if _changed(latest.get(price.model), price)
        ]
        Price.objects.bulk_create(added)
    return PricesImported(added=len(added), unchanged=len(table) - len(added), source=source)


def _changed(stored: Price | None, price: TablePrice) -> bool:
    if stored is None:
        return True
    return (stored.input_usd_per_million_tokens, stored.output_usd_per_million_tokens) != (
        price.input_usd_per_million_tokens,
        price.output_usd_per_million_tokens,
    )


def billing_model(model_id: str) -> str:
    """The id a provider bills ``model_id`` under: an OpenAI fine-tune
    (``ft:gpt-4o-mini-2024-07-18:org:name:id``) at its base's fine-tuned price
    (``ft:gpt-4o-mini-2024-07-18``); any other id as it is."""
    if model_id.startswith("ft:"):
        return "ft:" + model_id.split(":")[1]
    return model_id


def price_in_force(model_id: str, at: datetime) -> Price | None:
    """The price of ``model_id`` in force at ``at``: the latest manual row from before it,
    else the latest table row; None when none is known."""
    model = billing_model(model_id)
    for origin in (PriceOrigin.MANUAL, PriceOrigin.TABLE):
        price = (
            Price.objects.filter(model=model, origin=origin, effective_from__lte=at)
            .order_by("-effective_from", "-id")
            .first()
        )
        if price is not None:
            return price
    return None


def token_price_in_force(model_id: str, at: datetime) -> TokenPrice | None:
    """:func:`price_in_force` as the lower layers read it (``ftportal.spending.token_price``)."""
    price = price_in_force(model_id, at)
    if price is None:
        return None
    return TokenPrice(
        price.input_usd_per_million_tokens,
        price.output_usd_per_million_tokens,
        f"{price.get_origin_display()} for {price.model} from "
        f"{price.effective_from:%Y-%m-%d}: {price.source}",
    )


# What a price is written with on the override form: whole dollars per million tokens, to the
# row's eight places; more than this is a typo, not a price.
MAX_PRICE_PER_MILLION = Decimal(100_000)
MODEL_MAX_LENGTH = 300


def _checked_price(raw: str, field: str, label: str) -> Decimal | None:
    text = raw.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApplicationError(
            f"{label} ({field}): {text[:40]!r} is not a number.", extra={"field": field}
        ) from None
    if not value.is_finite() or value < 0 or value > MAX_PRICE_PER_MILLION:
        raise ApplicationError(
            f"{label} ({field}): give dollars per million tokens from 0 to "
            f"{MAX_PRICE_PER_MILLION}, not {text[:40]}.",
            extra={"field": field},
        )
    if value != value.quantize(PRICE_PLACES):
        raise ApplicationError(
            f"{label} ({field}): at most 8 decimal places, not {text[:40]}.",
            extra={"field": field},
        )
    return value


def price_override_add(
    *,
    model: str,
    input_usd_per_million: str,
    output_usd_per_million: str,
    reason: str,
    user: User,
    effective_from: datetime | None = None,
) -> Price:
    """A lead's manual price for ``model`` from ``effective_from`` (now by default): a new
    dated row that wins over the table's from then on. Rows already in the ledger keep the
    price they were written with. ApplicationError naming the field for bad input."""
    model = model.strip()
    if not model or len(model) > MODEL_MAX_LENGTH:
        raise ApplicationError(
            f"Model (model): give the id the provider bills, 1 to {MODEL_MAX_LENGTH} characters.",
            extra={"field": "model"},
        )
    given = _checked_price(input_usd_per_million, "input_usd_per_million", "Input price")
    taken = _checked_price(output_usd_per_million, "output_usd_per_million", "Output price")
    if given is None and taken is None:
        raise ApplicationError(
            "Input price (input_usd_per_million): give the input price, the output price or both.",
            extra={"field": "input_usd_per_million"},
        )
    reason = reason.strip()
    if not reason:
        raise ApplicationError(
            "Reason (reason): say why, e.g. the negotiated rate and its contract.",
            extra={"field": "reason"},
        )
    return Price.objects.create(
        model=billing_model(model),
        input_usd_per_million_tokens=given,
        output_usd_per_million_tokens=taken,
        origin=PriceOrigin.MANUAL,
        source=f"set by {user.get_username()}: {reason[:200]}",
        effective_from=effective_from or timezone.now(),
        created_by=user,
    )


def prices_listed(*, search: str = "", limit: int = 50) -> list[Price]:
    """The price in force now of each model matching ``search`` in its id (at most ``limit``,
    by id); without a search, of the models someone set by hand and those the catalog
    offers (a hosted base model and its fine-tunes)."""
    now = timezone.now()
    if search.strip():
        models = list(
            Price.objects.filter(effective_from__lte=now, model__icontains=search.strip())
            .values_list("model", flat=True)
            .distinct()
            .order_by("model")[:limit]
        )
    else:
        catalog = list(BaseModel.objects.values_list("key", flat=True))
        wanted = {*catalog, *(f"ft:{key}" for key in catalog)}
        manual = Price.objects.filter(origin=PriceOrigin.MANUAL).values_list("model", flat=True)
        models = sorted(wanted | set(manual))[:limit]
    prices = (price_in_force(model, now) for model in models)
    return [price for price in prices if price is not None]
