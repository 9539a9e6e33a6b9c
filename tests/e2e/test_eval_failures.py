"""The failure browser in a real browser: an ML lead opens a finished run, filters "A wrong, B
right", tags a row without a reload, sends two rows to review and finds them in the queue."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from datasets.models import Example, ExampleStatus
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from ftportal.roles import Role
from tests.factories import frozen_version

from .conftest import login

pytestmark = pytest.mark.e2e

WRONG = json.dumps({"category": "bug", "priority": "high"})
# Per item position: is A right, is B right.
PLAN = {
    0: (False, True),
    1: (True, False),
    2: (False, True),
    3: (False, True),
    4: (True, True),
    5: (False, False),
}


def test_a_lead_filters_tags_and_sends_failures_to_the_review_queue(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead, count=len(PLAN))
    dataset = version.dataset
    run = EvalRun.objects.create(
        project=project, dataset_version=version, status=EvalStatus.SUCCEEDED, created_by=lead
    )
    a = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base_model
    )
    b = Candidate.objects.create(
        run=run, position=1, label="tuned", kind="base", base_model=base_model
    )
    for item in version.items.all():
        for candidate, right in zip((a, b), PLAN[item.position], strict=True):
            EvalResult.objects.create(
                candidate=candidate,
                item=item,
                output=item.messages[-1]["content"] if right else WRONG,
                scores={"exact_match": float(right)},
            )

    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/")
    page.get_by_role("link", name="Browse failures").click()
    expect(page.locator("#failure-count")).to_contain_text("6 of 6 items")

    # --- filter: A wrong, B right ------------------------------------------------------------
    page.locator("#filter-outcome").select_option(label="A wrong, B right")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"outcome=a_wrong_b_right"))
    expect(page.locator("#failure-count")).to_contain_text("3 of 6 items")
    rows = page.locator("#failure-rows tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-position") for i in range(3)] == ["0", "2", "3"]
    expect(rows.first.locator(".answer-a del")).to_contain_text('"billing",')
    expect(rows.first.locator(".answer-a ins")).to_contain_text('"bug",')

    # --- tag a row in place --------------------------------------------------------------------
    page.evaluate("() => { window.__failuresPageLoaded = true; }")
    first = rows.first
    first.get_by_placeholder("new tag").fill("Wrong Label")
    first.get_by_role("button", name="Tag", exact=True).click()
    expect(first.locator('[data-tag="wrong label"]')).to_be_visible()
    assert page.evaluate("() => window.__failuresPageLoaded") is True  # swapped, not reloaded
    tagged = EvalResult.objects.get(candidate=a, item__position=0)
    assert tagged.tags == ["wrong label"]

    # --- send two to the review queue -----------------------------------------------------------
    send = page.locator("#send-to-review")
    rows.nth(1).get_by_role("checkbox").check()
    rows.nth(2).get_by_role("checkbox").check()
    expect(send).to_have_text("Send 2 chosen to the review queue")
    send.click()
    expect(page.locator(".messages")).to_contain_text(
        f"2 examples sent to the review queue of {dataset.name}."
    )
    expect(page).to_have_url(re.compile(r"outcome=a_wrong_b_right"))
    expect(rows.nth(1).locator(".review-state")).to_have_text("sent")
    expect(rows.nth(1).get_by_role("checkbox")).to_be_disabled()
    page.locator("#select-all").check()  # only the row not yet sent can be chosen
    expect(send).to_have_text("Send 1 chosen to the review queue")

    sent = list(Example.objects.filter(metadata__eval_run=run.pk).order_by("pk"))
    assert [e.metadata["item_position"] for e in sent] == [2, 3]
    assert {e.status for e in sent} == {ExampleStatus.PENDING}

    # --- the review queue holds them ------------------------------------------------------------
    rows.nth(1).get_by_role("link", name="sent").click()
    expect(page.get_by_role("heading", name=f"Review: {dataset.name}")).to_be_visible()
    expect(page.locator("#review-counts")).to_have_text("2 pending · 6 approved · 0 rejected")
    expect(page.locator("article.example")).to_have_attribute("data-example-id", str(sent[0].pk))
    expect(page.locator("li.role-assistant pre.content")).to_have_text(WRONG)
