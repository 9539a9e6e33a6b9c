"""The quality page in a real browser: analyse with the real worker, watch htmx poll until the
token table and findings appear, reject the duplicates after confirming, read a version's
readiness report."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from datasets.models import Example, ExampleStatus, ReviewAction
from datasets.services import dataset_version_freeze, example_review
from ftportal.roles import Role

from ..datasets.quality.builders import planted_dataset
from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

FINISH_TIMEOUT_MS = 120_000


def test_a_reviewer_analyses_a_dataset_fixes_duplicates_and_reads_readiness(
    live_server, page: Page, project, make_member, base_model, celery_worker_process
) -> None:
    reviewer = make_member(Role.REVIEWER)
    dataset, made = planted_dataset(project)

    login(page, live_server, reviewer.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/")
    page.get_by_role("link", name="Open the quality page").click()
    expect(page.get_by_role("heading", name="Quality: planted")).to_be_visible()
    page.locator("#analysis-base-model").select_option(base_model.key)
    page.get_by_role("button", name="Analyse").click()
    # htmx swaps in the running state, polls, and stops once the worker has finished.
    expect(page.locator("#token-stats")).to_be_visible(timeout=FINISH_TIMEOUT_MS)
    expect(page.locator("#cost-line")).to_contain_text("local: no per-token price")
    duplicates = page.locator('#finding-counts tr[data-kind="exact_duplicate"]')
    expect(duplicates).to_contain_text("2")
    expect(duplicates.get_by_role("link", name="review pending")).to_have_attribute(
        "href",
        f"/projects/{project.pk}/datasets/{dataset.pk}/review/?finding=exact_duplicate&status=pending",
    )

    page.locator("#fix-duplicates").click()
    expect(page.locator("#fix-confirm")).to_contain_text("This will reject 1 example(s)")
    page.get_by_role("button", name="Yes, reject 1 example(s)").click()
    expect(page.locator(".messages")).to_contain_text("Rejected 1 exact duplicate(s)")
    assert Example.objects.get(pk=made["dup_pending"].pk).status == ExampleStatus.REJECTED

    lead = make_member(Role.ML_LEAD)
    for example in Example.objects.filter(dataset=dataset, status=ExampleStatus.PENDING):
        example_review(example=example, user=lead, action=ReviewAction.APPROVE)
    version = dataset_version_freeze(dataset=dataset, user=lead)
    page.goto(f"{live_server.url}/projects/{project.pk}/dataset-versions/{version.pk}/")
    expect(page.locator("#readiness-band")).to_contain_text("insufficient data")
    expect(page.locator('#readiness-findings tr[data-kind="pii_email"]')).to_be_visible()
