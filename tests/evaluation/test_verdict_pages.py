"""What the evaluation, checkpoint-sweep and advice pages state follows one decision rule and
says so; latency says how it was measured; local models have a cost; people read labels, not
codes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel, Endpoint
from datasets.models import DatasetVersion
from evaluation.models import Candidate, CandidateKind, EvalKind, EvalRun, Prompting
from evaluation.services import CandidateSpec
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.api.builders import register_model_version
from tests.evaluation.finished_runs import finished_run
from tests.factories import frozen_version
from training.models import Checkpoint

pytestmark = pytest.mark.django_db

RULE_LINE = "Rule: a difference counts when the 95 % paired bootstrap CI excludes 0"
# Codes stored in the database that must never reach a reader.
CODES = (
    "fine_tuned",
    "few_shot",
    "zero_shot",
    "larger_model",
    "exact_match",
    "token_f1",
    "rouge_l",
    "ml_lead",
    "model_version",
    "no_difference",
    "batch_average",
    "per_request",
)


class _VisibleText(HTMLParser):
    """The text a person sees: element content, not tags, attributes or scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=130)  # 26 validation items


@pytest.fixture
def tuned(version: DatasetVersion, lead: User, base_model: BaseModel) -> ModelVersion:
    return register_model_version(
        version=version, base_model=base_model, user=lead, model_name="triage"
    )


def sweep(version: DatasetVersion, lead: User, tuned: ModelVersion, late_right: int) -> EvalRun:
    """Step 10 gets every item wrong, step 30 the first ``late_right`` right."""
    job = tuned.training_job
    early = Checkpoint.objects.create(job=job, step=10, path="/a/10", val_loss=0.5)
    late = Checkpoint.objects.create(job=job, step=30, path="/a/30", val_loss=0.9)
    items = version.validation_count
    return finished_run(
        version=version,
        user=lead,
        kind=EvalKind.CHECKPOINTS,
        training_job=job,
        answers=[
            (CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=early), [False] * items),
            (
                CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=late),
                [i < late_right for i in range(items)],
            ),
        ],
    )


def exact_match_row(run: EvalRun) -> dict[str, Any]:
    return next(c for c in run.report["comparisons"] if c["metric"] == "exact_match")


def test_a_sweep_whose_paired_test_disagrees_with_the_interval_is_borderline(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    # 5 of 26 items right against none: the bootstrap interval excludes 0, while McNemar's
    # test on 5 discordant items gives p = 2 / 32 = 0.0625.
    run = sweep(version, lead, tuned, late_right=5)

    row = exact_match_row(run)
    assert row["ci_low"] > 0 and row["test_p"] == pytest.approx(0.0625)
    assert row["outcome"] == "borderline" and not row["significant"]
    assert run.report["verdicts"][0].startswith("Borderline between triage step 30 and")
    recommendation = run.report["recommendation"]
    assert recommendation["step"] == 30
    assert "not clearly better than triage step 10: borderline" in recommendation["sentence"]
    client.force_login(lead)
    text = visible_text(
        client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    )
    assert " beats " not in text
    assert "McNemar exact p = 0.062 is not below 0.05" in text
    assert text.count(RULE_LINE) >= 3  # the recommendation, the verdict, the comparisons
    assert row["rule"] == "Rule: 95 % paired bootstrap CI excludes 0 and McNemar exact p < 0.05"


def test_a_stored_sweep_from_before_the_rule_reads_borderline_too(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    # Observed: step 30 "beats" step 10 (95 % CI 4.8 to 52.4) on a row showing McNemar
    # p = 0.070. A report stored then has no outcome, and its sentences say "beats".
    run = sweep(version, lead, tuned, late_right=12)
    row = exact_match_row(run)
    for key in ("outcome", "rule", "test_a_better", "test_b_better"):
        row.pop(key, None)
    row.update(ci_low=0.048, ci_high=0.524, test_p=0.070, significant=True)
    row["sentence"] = "triage step 30 beats triage step 10 by 28.6 points exact match"
    run.report["verdicts"] = [row["sentence"] + "."]
    run.report["recommendation"].pop("rule", None)
    run.save()

    client.force_login(lead)
    html = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    text = visible_text(html)

    assert " beats " not in text
    assert "Borderline between triage step 30 and triage step 10 on exact match" in text
    assert "(95 % CI 4.8 to 52.4, which excludes 0), but McNemar exact p = 0.070" in text
    assert 'data-outcome="borderline"' in html
    assert RULE_LINE in text


def test_a_local_model_shows_a_batch_average_and_a_machine_time_cost_a_hosted_one_p50_p95(
    client: Client, project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    items = version.validation_count
    run = finished_run(
        version=version,
        user=lead,
        answers=[
            (CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [True] * items),
            (
                CandidateSpec(
                    kind=CandidateKind.OPENAI_COMPATIBLE,
                    api_model="gpt-4o-mini",
                    endpoint=Endpoint.objects.get(name="openai"),
                    input_usd_per_million_tokens=Decimal("0.15"),
                    output_usd_per_million_tokens=Decimal("0.60"),
                ),
                [True] * items,
            ),
        ],
    )
    local, hosted = run.candidates.all()
    # 0.5 s of this machine per answer at $0.10 an hour: 1,000 answers cost $0.013889.
    assert local.metrics["cost_per_1000_usd"] == "0.013889"
    assert local.metrics["latency"] == {"mean": 0.5, "measured": "batch_average"}
    assert hosted.metrics["latency"]["measured"] == "per_request"
    client.force_login(lead)

    html = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()

    local_row, hosted_row = (visible_text(row) for row in table_rows(html, local, hosted))
    assert "0.50 s batch average per request" in local_row and "p50" not in local_row
    assert "$0.0139 machine time at $0.10/h" in local_row
    assert "no token price" not in local_row
    assert "p50 0.50 s / p95 0.50 s" in hosted_row and "batch average" not in hosted_row
    assert "token prices" in hosted_row


def test_a_local_model_stored_before_latency_said_how_it_was_measured_is_still_labelled(
    client: Client, project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    run = finished_run(
        version=version,
        user=lead,
        answers=[(CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [True])],
    )
    local = run.candidates.get()
    # As the worker stored it before: one average shown as p50 and p95, and no cost.
    local.metrics["latency"] = {"p50": 0.5, "p95": 0.5, "mean": 0.5}
    local.metrics.pop("cost_per_1000_usd", None)
    local.metrics.pop("cost_basis", None)
    local.save()
    client.force_login(lead)

    html = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()

    (row,) = (visible_text(r) for r in table_rows(html, local))
    assert "0.50 s batch average per request" in row and "p95" not in row
    assert "$0.0139 machine time at $0.10/h" in row


def table_rows(html: str, *candidates: Candidate) -> list[str]:
    """Each candidate's row of the summary table, as HTML."""
    rows = []
    for candidate in candidates:
        start = html.index(f'<tr data-candidate="{candidate.pk}">')
        rows.append(html[start : html.index("</tr>", start)])
    return rows


def test_the_pages_show_labels_not_codes(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    tuned: ModelVersion,
    base_model: BaseModel,
) -> None:
    items = version.validation_count
    comparison = finished_run(
        version=version,
        user=lead,
        answers=[
            (
                CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned),
                [i < 20 for i in range(items)],
            ),
            (
                CandidateSpec(
                    kind=CandidateKind.BASE,
                    base_model=base_model,
                    prompting=Prompting.FEW_SHOT,
                    few_shot_k=5,
                ),
                [i < 12 for i in range(items)],
            ),
        ],
    )
    checkpoints = sweep(version, lead, tuned, late_right=5)
    client.force_login(lead)
    pages = {
        "evaluation": reverse("eval_detail", args=[project.pk, comparison.pk]),
        "sweep": reverse("eval_detail", args=[project.pk, checkpoints.pk]),
        "advice": reverse("eval_advice", args=[project.pk, comparison.pk]),
        "dashboard": reverse("eval_list", args=[project.pk]),
    }

    for name, url in pages.items():
        # The test user's own name ("ml_lead-0") is theirs to choose, not a code.
        text = visible_text(client.get(url).content.decode()).replace(lead.username, "")
        assert "ML lead" in text, name
        assert [code for code in CODES if code in text] == [], name
        assert RULE_LINE in text or "Rule: 95 % paired bootstrap CI" in text, name

    html = client.get(pages["advice"]).content.decode()
    advice = visible_text(html)
    assert "Exact match" in advice and "few-shot prompt" in advice and "fine-tuned" in advice
    # The fine-tuned row's cell is empty; the few-shot row says when training pays back.
    cells = [cell.split("</td>")[0] for cell in html.split('<td class="payback">')[1:]]
    assert cells[0] == ""
    words = ("Pays for itself", "Never pays", "Cheaper from the first")
    assert cells[1].startswith(words), cells[1]
    assert "0.0 months" not in advice
