"""The fine-tune-or-prompt page, read from finished runs: the recommendation follows the
measured quality and costs, and the guide's pitfalls show where they apply."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from evaluation.advice import run_advice
from evaluation.models import CandidateKind
from evaluation.services import CandidateSpec
from ftportal.models import Project
from ftportal.roles import Role
from tests.evaluation.finished_runs import fine_tuned_against_five_shot, finished_run
from tests.factories import frozen_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def big_version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=130)  # 104 training examples, 26 validation


def test_when_few_shot_does_as_well_the_advice_is_to_prompt(
    big_version: DatasetVersion, lead: User, base_model: BaseModel
) -> None:
    run = fine_tuned_against_five_shot(big_version, lead, base_model, tuned=13, shot=13)

    result = run_advice(run, monthly_requests=100_000, horizon_months=12)

    assert result.advice.recommendation.startswith("Prompt")
    assert "prompting_is_enough" in result.advice.pitfall_codes
    assert "insufficient_data" not in result.advice.pitfall_codes


def test_when_fine_tuning_is_clearly_better_the_advice_is_to_fine_tune(
    big_version: DatasetVersion, lead: User, base_model: BaseModel
) -> None:
    run = fine_tuned_against_five_shot(big_version, lead, base_model, tuned=26, shot=5)

    result = run_advice(run, monthly_requests=100_000, horizon_months=12)

    assert result.advice.recommendation.startswith("Fine-tune"), result.advice.recommendation
    assert result.advice.pitfall_codes == ()
    tuned_row, shot_row = result.advice.rows
    assert tuned_row.quality == 1.0 and shot_row.quality == pytest.approx(5 / 26)
    assert shot_row.vs_fine_tuned is not None and shot_row.vs_fine_tuned.comparison.ci_low > 0


def test_a_small_dataset_is_flagged_and_keeps_the_advice_from_saying_fine_tune(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    small = frozen_version(project, lead)  # 12 examples
    run = fine_tuned_against_five_shot(small, lead, base_model, tuned=3, shot=0)

    result = run_advice(run, monthly_requests=100_000, horizon_months=12)

    assert "insufficient_data" in result.advice.pitfall_codes
    assert not result.advice.recommendation.startswith("Fine-tune")


def test_managers_read_the_advice_page_and_outsiders_do_not_see_it(
    big_version: DatasetVersion,
    lead: User,
    base_model: BaseModel,
    make_member: Callable[..., User],
    project: Project,
    client: Client,
) -> None:
    run = fine_tuned_against_five_shot(big_version, lead, base_model, tuned=26, shot=5)
    url = reverse("eval_advice", args=[project.pk, run.pk])
    client.force_login(make_member(Role.MANAGER))

    page = client.get(url, {"monthly_requests": "5000", "horizon_months": "6"})

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="recommendation"' in html and "Fine-tune" in html
    assert 'value="5000"' in html and html.count('data-kind="') == 2
    outsider = make_member(Role.ADMIN, target=Project.objects.create(name="other"))
    client.force_login(outsider)
    assert client.get(url).status_code == 404


def test_a_bad_volume_is_refused_naming_the_field(
    big_version: DatasetVersion, lead: User, base_model: BaseModel, client: Client, project: Project
) -> None:
    run = fine_tuned_against_five_shot(big_version, lead, base_model, tuned=26, shot=5)
    client.force_login(lead)

    response = client.get(
        reverse("eval_advice", args=[project.pk, run.pk]), {"monthly_requests": "lots"}
    )

    assert response.status_code == 400
    assert "monthly_requests" in response.content.decode()


def test_a_run_without_a_fine_tuned_candidate_says_so(
    big_version: DatasetVersion, lead: User, base_model: BaseModel, client: Client, project: Project
) -> None:
    run = finished_run(
        version=big_version,
        user=lead,
        answers=[(CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [True])],
    )
    client.force_login(lead)

    html = client.get(reverse("eval_advice", args=[project.pk, run.pk])).content.decode()

    assert 'id="no-advice"' in html and "no fine-tuned candidate" in html


def test_the_advice_reuses_the_reports_interval_and_recomputes_the_same_one_without_it(
    big_version: DatasetVersion, lead: User, base_model: BaseModel
) -> None:
    run = fine_tuned_against_five_shot(big_version, lead, base_model, tuned=20, shot=12)
    stored = next(
        c for c in run.report["comparisons"] if c["metric"] == run.report["primary_metric"]
    )

    from_report = run_advice(run, monthly_requests=1000, horizon_months=12).advice.rows[1]
    run.report = {**run.report, "comparisons": []}
    recomputed = run_advice(run, monthly_requests=1000, horizon_months=12).advice.rows[1]

    assert from_report.vs_fine_tuned is not None and recomputed.vs_fine_tuned is not None
    reported = from_report.vs_fine_tuned.comparison
    assert (reported.ci_low, reported.ci_high) == (
        stored["ci_low"],
        stored["ci_high"],
    )
    assert recomputed.vs_fine_tuned.comparison.ci_low == pytest.approx(stored["ci_low"])
    assert recomputed.vs_fine_tuned.comparison.ci_high == pytest.approx(stored["ci_high"])
