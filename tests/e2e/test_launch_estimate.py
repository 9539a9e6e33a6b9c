"""The launch form's time estimate, in a real browser: it shows its range, its parts and what
its speeds rest on, says the validation interval is scaled to the data, and counts the
validation passes again when the lead types an interval of their own."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from ftportal.roles import Role
from tests.factories import frozen_version

from .conftest import login
from .test_lifecycle import HTMX_PROCESSED_JS

pytestmark = pytest.mark.e2e


def passes_shown(page: Page) -> int:
    text = page.locator("#estimate-validation").inner_text()
    found = re.match(r"(\d+) validation pass", text)
    assert found, text
    return int(found[1])


def test_the_estimate_shows_its_range_and_recounts_validation_when_the_lead_sets_the_interval(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead, count=100)
    login(page, live_server, lead.username)
    page.goto(live_server.url + reverse("job_launch", args=[project.pk, version.pk]))

    expect(page.locator("#estimate-range")).to_contain_text(" to ")
    expect(page.locator("#estimate-time")).to_have_attribute("data-speed-source", "first_guess")
    expect(page.locator("#estimate-basis")).to_contain_text("FTPORTAL_LOCAL_TOKENS_PER_SECOND")
    intervals = page.locator("#estimate-intervals")
    expect(intervals).to_contain_text("scaled to the data")
    scaled_passes = passes_shown(page)

    page.wait_for_function(HTMX_PROCESSED_JS, arg="#train-form")
    form = page.locator("#train-form")
    form.locator("#advanced-hyperparameters summary").click()
    form.get_by_label("Validate every N steps").fill("1")
    expect(intervals).to_contain_text("Validation every 1 step,")
    assert passes_shown(page) > scaled_passes
    # The checkpoint interval is still left to the default.
    expect(intervals).to_contain_text("scaled to the data")
