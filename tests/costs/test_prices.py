"""Dated token prices (``costs.prices``): imported from litellm's table as dollars per million
tokens, a changed price added as a new dated row while the old one stays in force for its
time, a lead's override kept through imports, and a bad table refused with where it is bad."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from costs.models import LedgerEntry, Price, PriceOrigin
from costs.prices import PriceTableError, billing_model, price_in_force, prices_import
from ftportal.models import Project
from ftportal.spending import TOKENS_PER_PRICE, Spend, SpendKind, SpendUnit, spend_record

pytestmark = pytest.mark.django_db


def table(path: Path, **models: dict[str, object]) -> Path:
    entries: dict[str, object] = {"sample_spec": {"input_cost_per_token": 0.0}}
    entries.update(models)
    path.write_text(json.dumps(entries))
    return path


def chat(given: object, taken: object, provider: str = "openai") -> dict[str, object]:
    return {
        "mode": "chat",
        "litellm_provider": provider,
        "input_cost_per_token": given,
        "output_cost_per_token": taken,
    }


def test_the_installed_table_is_imported_as_exact_prices_per_million() -> None:
    imported = prices_import()
    assert imported.added > 100 and imported.source.startswith("litellm ")
    now = timezone.now()
    mini = price_in_force("gpt-4o-mini-2024-07-18", now)
    assert mini is not None
    # The table says 1.5e-07 and 6e-07 dollars a token.
    assert mini.input_usd_per_million_tokens == Decimal("0.15")
    assert mini.output_usd_per_million_tokens == Decimal("0.6")
    # A fine-tune is billed at its base's fine-tuned price (3e-07 and 1.2e-06 a token).
    tuned = price_in_force("ft:gpt-4o-mini-2024-07-18:acme:triage:abc123", now)
    assert tuned is not None and tuned.model == "ft:gpt-4o-mini-2024-07-18"
    assert (tuned.input_usd_per_million_tokens, tuned.output_usd_per_million_tokens) == (
        Decimal("0.3"),
        Decimal("1.2"),
    )
    # Not chat: not imported.
    assert not Price.objects.filter(model="text-embedding-3-small").exists()

    again = prices_import()
    assert again.added == 0 and again.unchanged == imported.added + imported.unchanged


def test_a_changed_price_is_a_new_dated_row_and_the_old_one_stays_in_force_for_its_time(
    tmp_path: Path, project: Project
) -> None:
    start = timezone.now() - timedelta(days=30)
    prices_import(path=table(tmp_path / "a.json", **{"m-1": chat(1e-06, 4e-06)}), now=start)
    old = price_in_force("m-1", start)
    assert old is not None
    spend_record(
        Spend(
            project_id=project.pk,
            kind=SpendKind.SERVING,
            quantity=Decimal(500_000),
            unit=SpendUnit.TOKENS,
            price=old.input_usd_per_million_tokens,
            price_per=TOKENS_PER_PRICE,
            price_source=old.source,
            event="serving:test:1",
            origin="test traffic",
            occurred_at=start,
        )
    )

    later = start + timedelta(days=10)
    changed = table(tmp_path / "b.json", **{"m-1": chat(2e-06, 4e-06), "m-2": chat(5e-07, None)})
    imported = prices_import(path=changed, now=later)
    assert (imported.added, imported.unchanged) == (2, 0)

    assert price_in_force("m-1", start + timedelta(days=1)) == old  # history keeps its price
    new = price_in_force("m-1", later)
    assert new is not None and new.input_usd_per_million_tokens == Decimal(2)
    only_input = price_in_force("m-2", later)
    assert only_input is not None and only_input.output_usd_per_million_tokens is None
    assert price_in_force("m-1", start - timedelta(seconds=1)) is None
    # The ledger row written at the old price is what it was: 500,000 tokens at $1 a million.
    assert LedgerEntry.objects.get().amount == Decimal("0.5")


def test_a_manual_override_wins_from_its_date_and_no_import_touches_it(tmp_path: Path) -> None:
    start = timezone.now() - timedelta(days=3)
    path = table(tmp_path / "t.json", **{"m-1": chat(1e-06, 2e-06)})
    prices_import(path=path, now=start)
    override = Price.objects.create(
        model="m-1",
        input_usd_per_million_tokens=Decimal("0.80"),
        output_usd_per_million_tokens=Decimal("1.60"),
        origin=PriceOrigin.MANUAL,
        source="negotiated discount",
        effective_from=start + timedelta(days=1),
    )
    prices_import(path=table(tmp_path / "t2.json", **{"m-1": chat(3e-06, 6e-06)}))

    assert price_in_force("m-1", start + timedelta(hours=1)).source.startswith("price table")  # type: ignore[union-attr]
    assert price_in_force("m-1", timezone.now()) == override
    assert Price.objects.filter(origin=PriceOrigin.MANUAL).get() == override


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"m-1": {"mode": "chat", "input_cost_per_token": "lots"}}', "m-1: input_cost_per_token"),
        ('{"m-1": {"mode": "chat", "output_cost_per_token": -1}}', "m-1: output_cost_per_token"),
        ('{"m-1": {"mode": "chat",\n "input_cost_per_token": 1e-06,}}', "line 2"),
    ],
)
def test_a_bad_table_is_refused_with_where_and_nothing_is_imported(
    tmp_path: Path, content: str, where: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PriceTableError) as refused:
        prices_import(path=path)
    assert str(path) in refused.value.message and where in refused.value.message
    assert not Price.objects.exists()
    with pytest.raises(CommandError, match=where):
        call_command("prices_import", "--file", str(path))


def test_the_command_says_what_it_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = table(tmp_path / "t.json", **{"m-1": chat(1e-06, 2e-06), "m-2": chat(1e-06, 2e-06)})
    call_command("prices_import", "--file", str(path))
    call_command("prices_import", "--file", str(path))
    said = capsys.readouterr().out.splitlines()
    assert said == [
        "2 prices added, 0 unchanged (price table t.json).",
        "0 prices added, 2 unchanged (price table t.json).",
    ]


def test_billing_models() -> None:
    assert billing_model("ft:gpt-4o-mini-2024-07-18:acme::9xYz") == "ft:gpt-4o-mini-2024-07-18"
    assert billing_model("claude-haiku-4-5") == "claude-haiku-4-5"


def test_an_admin_adds_an_override_as_a_manual_row_of_their_own(
    admin_client: Client, admin_user: User
) -> None:
    answer = admin_client.post(
        "/admin/costs/price/add/",
        {
            "model": "gpt-4o-mini-2024-07-18",
            "provider": "openai",
            "input_usd_per_million_tokens": "0.12",
            "output_usd_per_million_tokens": "0.48",
            "source": "negotiated discount",
            "effective_from_0": "2026-01-01",
            "effective_from_1": "00:00:00",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    override = Price.objects.get()
    assert override.origin == PriceOrigin.MANUAL and override.created_by == admin_user
    assert price_in_force("gpt-4o-mini-2024-07-18", timezone.now()) == override
