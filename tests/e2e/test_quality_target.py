"""The quality target in a real browser: a lead sets it on the dataset page (a wrong value is
refused naming the field), then the advisor's page of an evaluation whose best candidate falls
short says that neither option is good enough, with the numbers, and lists every label with too
few training examples."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from catalog.models import BaseModel
from datasets.models import Dataset
from datasets.services import dataset_version_freeze
from evaluation.models import CandidateKind, Prompting
from evaluation.services import CandidateSpec
from ftportal.roles import Role
from tests.api.builders import register_model_version
from tests.datasets.label_data import label_names, label_set_dataset
from tests.evaluation.finished_runs import finished_run

from .conftest import login

pytestmark = pytest.mark.e2e


def test_a_lead_sets_a_target_and_the_advisor_says_neither_option_is_good_enough(
    live_server, page: Page, project, make_member, base_model: BaseModel, tmp_path: Path
) -> None:
    lead = make_member(Role.ML_LEAD)
    dataset = Dataset.objects.create(project=project, name="intents")
    label_set_dataset(
        dataset, dict.fromkeys(label_names(40, random.Random(3)), 10), random.Random(3)
    )
    version = dataset_version_freeze(dataset=dataset, user=lead)
    model_version = register_model_version(
        version=version, base_model=base_model, user=lead, model_name="intents"
    )
    items = version.validation_count
    run = finished_run(
        version=version,
        user=lead,
        answers=[
            (
                CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=model_version),
                [i < items * 2 // 5 for i in range(items)],
            ),
            (
                CandidateSpec(
                    kind=CandidateKind.BASE,
                    base_model=base_model,
                    prompting=Prompting.FEW_SHOT,
                    few_shot_k=5,
                ),
                [i < 1 for i in range(items)],
            ),
        ],
    )

    # --- the lead sets the target on the dataset page -----------------------------------------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/")
    expect(page.locator("#quality-target-description")).to_contain_text("No target")
    page.locator("#quality-target-value").fill("80")
    page.get_by_role("button", name="Save target").click()
    expect(page.locator("#quality-target-error")).to_contain_text(
        "quality_target: a score above 0 and at most 1"
    )
    expect(page.locator("#quality-target-value")).to_have_value("80")
    page.locator("#quality-target-value").fill("0.8")
    page.get_by_role("button", name="Save target").click()
    expect(page.locator(".messages")).to_contain_text("Quality target saved: 0.8 (80 %).")
    expect(page.locator("#quality-target-description")).to_contain_text("80.0 %")
    dataset.refresh_from_db()
    assert dataset.quality_target == 0.8

    # --- the advisor's page checks the best candidate against it ------------------------------
    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/advice/")
    expect(page.locator("#recommendation")).to_contain_text("Neither option is good enough")
    expect(page.locator("#recommendation")).to_contain_text("below the target of 80.0 %")
    expect(page.locator("#quality-target-verdict")).to_have_text(
        "below the target, neither option is good enough"
    )
    expect(page.locator("#quality-target")).to_contain_text("95 % CI")
    thin = page.locator('#pitfalls [data-code="insufficient_data"]')
    expect(thin).to_contain_text("Insufficient data per label")
    thin.locator("summary").click()
    expect(thin.locator("tbody tr")).to_have_count(40)
    expect(thin.locator("tbody")).to_contain_text('<b>card</b> & "lost"')
    page.screenshot(path=str(tmp_path / "advice-below-target.png"), full_page=True)
