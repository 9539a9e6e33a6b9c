"""A held-out test set, in a real browser: an ML lead freezes a dataset as a test set, reads its
overlap with the training version (the warning, the counts, the pairs, a hostile input shown as
text), sees the training version's page name it, and evaluates a fine-tuned version on it from
the job page, where it is offered first."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from bench.test_set_overlap import tickets
from catalog.models import BaseModel
from datasets.models import DatasetVersion
from datasets.services import dataset_version_freeze
from evaluation.models import EvalRun, EvalSplit
from ftportal.roles import Role
from tests.api.builders import register_model_version
from tests.datasets.held_out_sets import HOSTILE, approved_dataset, held_out_rows_sharing

from .conftest import login

pytestmark = pytest.mark.e2e


def test_a_lead_freezes_a_test_set_reads_its_overlap_and_evaluates_on_it(
    live_server, page: Page, project, make_member, base_model: BaseModel
) -> None:
    lead = make_member(Role.ML_LEAD)
    training_rows = tickets(2000, seed=1)
    # The hostile input is in the training data too, so it shows among the pairs.
    training = dataset_version_freeze(
        dataset=approved_dataset(
            project, "tickets ✓ train", [*training_rows, (HOSTILE, "intent_refund")]
        ),
        user=lead,
    )
    fine_tuned = register_model_version(
        version=training, base_model=base_model, user=lead, model_name="tickets ✓"
    )
    held_out = approved_dataset(
        project,
        "tickets ✓ held-out",
        held_out_rows_sharing(training_rows, count=300, exact=9, near=4),
    )

    # --- freeze the held-out dataset as a test set ------------------------------------------------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{held_out.pk}/")
    page.get_by_label("Held-out test set").check()
    page.get_by_role("button", name="Freeze version").click()
    expect(page.get_by_role("heading", name=f"{held_out.name} v1")).to_be_visible()
    test_set = DatasetVersion.objects.get(dataset=held_out)
    assert test_set.is_test_set
    expect(page.locator("#test-set-badge")).to_have_text("held-out test set")
    expect(page.locator("#version-test-set")).to_contain_text("Not split")
    expect(page.locator("#launch-slot")).to_have_count(0)

    # --- its overlap: a warning, the counts per training version, the pairs --------------------
    # 9 exact copies, 4 near ones and the hostile input, shared exactly.
    expect(page.locator("#test-overlap-warning")).to_contain_text(
        "14 pair(s) of a training item and a test item share their input"
    )
    row = page.locator(f'#test-overlaps tr[data-version="{training.pk}"]')
    expect(row.locator("td")).to_have_text([str(training), "10", "4", "14 of 300"])
    pairs = page.locator(f"#test-overlap-pairs-{training.pk}")
    pairs.locator("summary").click()
    expect(pairs.locator('tbody tr[data-kind="exact"]')).to_have_count(10)
    expect(pairs.locator('tbody tr[data-kind="near"]')).to_have_count(4)
    expect(pairs).to_contain_text(HOSTILE)
    assert page.evaluate("window.__xss") is None

    # --- the training version's page names the test set -----------------------------------------
    page.locator(f'#test-overlaps tr[data-version="{training.pk}"] a').click()
    expect(page.locator("#overlapping-test-sets")).to_contain_text(
        f"{test_set} (10 exact, 4 near; 14 test item(s))"
    )

    # --- the job page offers the test set first; evaluating runs on it, whole ------------------
    page.goto(
        f"{live_server.url}/projects/{project.pk}/training-jobs/{fine_tuned.training_job_id}/"
    )
    choice = page.locator("#evaluate-on")
    expect(choice).to_have_value(str(test_set.pk))
    page.locator("#evaluate-version").click()
    expect(page).to_have_url(re.compile(rf"/projects/{project.pk}/evaluations/\d+/$"))
    run = EvalRun.objects.get()
    assert page.url.endswith(f"/evaluations/{run.pk}/")
    assert (run.dataset_version, run.split) == (test_set, EvalSplit.ALL)
