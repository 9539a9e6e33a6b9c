"""A search over training settings from the launch form, in a real browser: the lead opens the
search under the launch button, starts two trials within a budget, lands on the search's page
with every trial listed and the first one queued, follows it to its job page and back, and
cancels the search."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from ftportal.roles import Role
from tests.factories import label_set_version
from training.models import TrainingSearch

from .conftest import login
from .test_lifecycle import HTMX_PROCESSED_JS

pytestmark = pytest.mark.e2e


def test_a_lead_starts_a_search_from_the_launch_form_and_cancels_it(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = label_set_version(project, lead, count=40)
    login(page, live_server, lead.username)
    page.goto(live_server.url + reverse("job_launch", args=[project.pk, version.pk]))
    page.wait_for_function(HTMX_PROCESSED_JS, arg="#train-form")

    search_settings = page.locator("#search-settings")
    search_settings.locator("summary").click()
    expect(search_settings).to_contain_text("label accuracy")
    search_settings.get_by_label("Trials").fill("2")
    search_settings.get_by_label("Time budget in minutes").fill("120")
    search_settings.get_by_role("button", name="Start the search").click()

    expect(page.locator("h1")).to_contain_text("Training search")
    search = TrainingSearch.objects.get()
    assert (search.budget_minutes, len(search.trial_settings)) == (120, 2)
    rows = page.locator("#search-trials tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("the recipe as it is")
    expect(rows.nth(0)).to_contain_text("Queued")
    expect(rows.nth(1)).to_contain_text("learning rate 0.001")
    expect(rows.nth(1)).to_contain_text("not started")
    expect(page.locator("#search-budget-used")).to_contain_text("of 120 minutes")

    rows.nth(0).get_by_role("link").click()
    expect(page.locator("#job-search")).to_contain_text(f"training search {search.pk}")
    expect(page.locator("#job-hyperparameters")).to_contain_text(
        "Validation metric: loss and label accuracy"
    )
    page.locator("#job-search a").click()

    page.locator("#cancel-search").click()
    expect(page.locator("#search-status")).to_contain_text("(cancelling)")
    expect(page.locator("#search-trials tbody tr").nth(0)).to_contain_text("Cancelled")
