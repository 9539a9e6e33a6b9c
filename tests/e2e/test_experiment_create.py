"""A lead sets up an A/B test in a real browser: on the experiments page, the create form with
two arms (version 1 against version 2, weighted 3 to 1), a mistake refused beside its field
with what was typed kept, then the draft created, started from its page, and listed as
running. A reviewer on the same page sees the list but no form."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from ftportal.roles import Role
from serving.models import Experiment, ExperimentStatus
from tests.serving.experiment_builders import SUCCESS, two_versions

from .conftest import login

pytestmark = pytest.mark.e2e


def test_a_lead_creates_an_experiment_with_two_arms_starts_it_and_sees_it_running(
    live_server, page: Page, project, make_member
) -> None:
    lead, reviewer = make_member(Role.ML_LEAD), make_member(Role.REVIEWER)
    versions = two_versions(project, lead)
    experiments_url = f"{live_server.url}/projects/{project.pk}/experiments/"

    login(page, live_server, lead.username)
    page.goto(experiments_url)
    expect(page.locator("#experiment-list")).to_contain_text("No experiments yet.")
    page.get_by_label("Name", exact=True).fill("triage v2 against v1")
    page.get_by_label("Success event").fill(SUCCESS)
    page.get_by_label("Arm 1 name").fill("control")
    page.get_by_label("Arm 1 serves").select_option(label=str(versions.first))
    page.get_by_label("Arm 1 weight").fill("3")
    # Both arms named alike: refused beside the second arm's name, nothing typed lost.
    page.get_by_label("Arm 2 name").fill("control")
    page.get_by_label("Arm 2 serves").select_option(label=str(versions.second))
    page.get_by_role("button", name="Create experiment").click()

    expect(page.locator("#arm-1-name-error")).to_have_text(
        "arms[1].name: two arms are named 'control'."
    )
    expect(page.get_by_label("Name", exact=True)).to_have_value("triage v2 against v1")
    expect(page.get_by_label("Arm 1 weight")).to_have_value("3")
    expect(page.get_by_label("Arm 2 serves")).to_have_value(f"version:{versions.second.pk}")
    assert not Experiment.objects.exists()

    page.get_by_label("Arm 2 name").fill("challenger")
    page.get_by_role("button", name="Create experiment").click()

    experiment = Experiment.objects.get(project=project)
    expect(page).to_have_url(re.compile(rf"/experiments/{experiment.pk}/$"))
    expect(page.locator(".messages")).to_contain_text("Created triage v2 against v1, a draft")
    page.locator("#experiment-start").click()
    expect(page.locator(".messages")).to_contain_text("Started")

    page.goto(experiments_url)
    row = page.locator(f"#experiment-{experiment.pk}")
    expect(row).to_contain_text("triage v2 against v1")
    expect(row).to_contain_text("control, challenger")
    expect(row.locator(".experiment-status")).to_have_text("running")
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    assert sorted(experiment.arms.values_list("name", "weight")) == [
        ("challenger", 1),
        ("control", 3),
    ]

    login(page, live_server, reviewer.username)
    page.goto(experiments_url)
    expect(page.locator(f"#experiment-{experiment.pk}")).to_be_visible()
    expect(page.locator("#create-experiment")).to_have_count(0)
