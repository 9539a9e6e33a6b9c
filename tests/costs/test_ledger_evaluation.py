"""An evaluation's spends in the ledger: each stored batch of a hosted candidate's answers is its
tokens at the prices the run recorded, a local candidate's its worker time, and the judge's
verdicts are judging; the amounts match what the answers' usage says, worked out by hand."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client

from catalog.models import BaseModel, EndpointKind, Provider
from costs.models import LedgerEntry
from evaluation.models import Candidate, CandidateKind, EvalResult, EvalStatus, JudgeVerdict
from evaluation.services import CandidateSpec
from evaluation.spending import billing_endpoint_id
from fakes.chat_servers import (
    FakeAnthropicServer,
    FakeOpenAIChatServer,
    fake_anthropic_fixture,  # noqa: F401
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from ftportal.spending import SpendKind, SpendUnit
from tests.evaluation.test_runs import (
    anthropic_judge,
    chat_key,  # noqa: F401 (autouse: the fakes' key where the worker reads it)
    executed,
    held_out_version,
    judged_run,
    openai_spec,
    run_of,
)
from tests.factories import fake_endpoint

pytestmark = pytest.mark.django_db


def ledger_total(**filters: object) -> Decimal:
    total: Decimal = LedgerEntry.objects.filter(**filters).aggregate(total=Sum("amount"))["total"]
    return total


def test_hosted_answers_and_a_hosted_judge_are_spent_at_the_runs_prices(
    project: Project,
    lead: User,
    fake_openai_chat: FakeOpenAIChatServer,
    fake_anthropic: FakeAnthropicServer,
    client: Client,
) -> None:
    fake_anthropic.answer_with = lambda messages: "Reasoning.\nVerdict: 1"
    run = judged_run(
        project,
        lead,
        held_out_version(project, lead),
        fake_openai_chat,
        anthropic_judge(fake_anthropic, input_price=Decimal("1.00"), output_price=Decimal("5.00")),
    )
    finished = executed(run)
    assert finished.status == EvalStatus.SUCCEEDED, finished.error

    # The candidates: $0.30 a million prompt tokens and $1.20 a million completion tokens.
    usage = EvalResult.objects.filter(candidate__run=run).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    evaluation = LedgerEntry.objects.filter(kind=SpendKind.EVALUATION, project=project)
    assert evaluation.filter(unit=SpendUnit.TOKENS).count() == evaluation.count() > 0
    assert (
        evaluation.filter(event__endswith=":input").aggregate(q=Sum("quantity"))["q"]
        == (usage["prompt"])
    )
    assert (
        evaluation.filter(event__endswith=":output").aggregate(q=Sum("quantity"))["q"]
        == (usage["completion"])
    )
    assert (
        ledger_total(kind=SpendKind.EVALUATION)
        == (usage["prompt"] * Decimal("0.30") + usage["completion"] * Decimal("1.20")) / 1_000_000
    )

    # The judge: $1 and $5 a million; "Reasoning. Verdict: 1" is three words, twice an item.
    judged = JudgeVerdict.objects.filter(run=run).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    assert judged["completion"] == 6 * 2 * 3
    assert (
        ledger_total(kind=SpendKind.JUDGING)
        == (judged["prompt"] * Decimal("1.00") + 36 * Decimal("5.00")) / 1_000_000
    )
    assert ledger_total(kind=SpendKind.JUDGING) == Decimal(finished.report["judge_cost_usd"])

    # Each spend names the endpoint that bills it: the candidates' OpenAI-compatible endpoint,
    # the judge's Anthropic one.
    [candidate_endpoint] = {candidate.endpoint for candidate in run.candidates.all()}
    assert candidate_endpoint is not None and run.judge_endpoint is not None
    assert candidate_endpoint.url == fake_openai_chat.base_url
    assert set(evaluation.values_list("endpoint", flat=True)) == {candidate_endpoint.pk}
    judging = LedgerEntry.objects.filter(kind=SpendKind.JUDGING)
    assert judging.exists()
    assert set(judging.values_list("endpoint", flat=True)) == {run.judge_endpoint.pk}
    # Every row names the run, and the run's page shows the ledger's total for it.
    assert set(LedgerEntry.objects.values_list("eval_run", flat=True)) == {run.pk}
    client.force_login(lead)
    page = client.get(f"/projects/{run.project_id}/evaluations/{run.pk}/")
    shown = ledger_total(eval_run=run).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    assert f"This evaluation spent ${shown}" in " ".join(page.content.decode().split())


def test_a_hosted_candidate_without_prices_is_recorded_unpriced_not_free(
    project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    spec = openai_spec(
        fake_openai_chat, input_usd_per_million_tokens=None, output_usd_per_million_tokens=None
    )
    finished = executed(run_of(project, lead, held_out_version(project, lead), spec))
    assert finished.status == EvalStatus.SUCCEEDED, finished.error

    rows = LedgerEntry.objects.filter(kind=SpendKind.EVALUATION)
    assert rows.exists() and not rows.filter(amount__isnull=False).exists()
    assert all(row.price_source.endswith(("none for input", "none for output")) for row in rows)


def test_a_local_candidate_is_spent_as_worker_time_at_the_hourly_rate(
    project: Project, lead: User, base_model: BaseModel, settings: object
) -> None:
    settings.FTPORTAL_LOCAL_USD_PER_HOUR = "0.36"  # type: ignore[attr-defined]
    run = run_of(
        project,
        lead,
        held_out_version(project, lead),
        CandidateSpec(kind=CandidateKind.BASE, base_model=base_model),
    )
    finished = executed(run)
    assert finished.status == EvalStatus.SUCCEEDED, finished.error

    rows = list(LedgerEntry.objects.filter(kind=SpendKind.EVALUATION))
    assert rows and all(row.unit == SpendUnit.COMPUTE_SECONDS for row in rows)
    spent_seconds = sum((row.quantity for row in rows), Decimal(0))
    answered_seconds = sum(
        Decimal(str(seconds or 0))
        for seconds in EvalResult.objects.filter(candidate__run=run).values_list(
            "latency_seconds", flat=True
        )
    )
    assert abs(spent_seconds - answered_seconds) < Decimal("0.00001") * len(rows)
    # This worker's own time: no provider bills it.
    assert all(row.endpoint_id is None for row in rows)
    # $0.36 an hour is $0.0001 a second.
    for row in rows:
        assert row.price == Decimal("0.36")
        assert row.amount == (row.quantity / 10_000).quantize(Decimal("0.00000001"))


def test_a_hosted_base_model_or_its_fine_tune_is_billed_by_the_base_models_endpoint(
    base_model: BaseModel, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    endpoint = fake_endpoint(
        fake_openai_chat.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
    )
    hosted = BaseModel.objects.create(
        key="ft-test-hosted-base",
        display_name="GPT-4.1 mini",
        provider=Provider.OPENAI,
        endpoint=endpoint,
    )
    # As evaluation.runner.chat_for calls them: at the base model's endpoint, or on this worker.
    for kind in (CandidateKind.BASE, CandidateKind.MODEL_VERSION, CandidateKind.CHECKPOINT):
        assert billing_endpoint_id(Candidate(kind=kind, base_model=hosted)) == endpoint.pk
        assert billing_endpoint_id(Candidate(kind=kind, base_model=base_model)) is None
    named = Candidate(kind=CandidateKind.OPENAI_COMPATIBLE, endpoint=endpoint, base_model=None)
    assert billing_endpoint_id(named) == endpoint.pk
