"""Overlapping review in a real browser: a lead sets overlap and guidelines and assigns, two
reviewers vote by keyboard and disagree, the lead adjudicates, then filters and a bulk action."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from datasets.models import (
    Dataset,
    Example,
    ExampleAssignment,
    ExampleComment,
    ExampleStatus,
    ReviewVote,
    Tag,
)
from ftportal.roles import Role
from tests.factories import TICKETS, chat

from .conftest import login

pytestmark = pytest.mark.e2e

GUIDELINES = "# Triage rules\n\n**Billing** is anything about money. <b>raw</b>"
EDITED = '{"category": "billing", "priority": "low"}'

SETTLED_JS = """() => !document.querySelector('#review-card')
  .matches('.htmx-request, .htmx-swapping, .htmx-settling')"""

CARD_CHANGED_JS = """(previousId) => {
  const card = document.querySelector('#review-card');
  if (card.matches('.htmx-request, .htmx-swapping, .htmx-settling')) return false;
  const example = card.querySelector('article.example');
  return example === null || example.dataset.exampleId !== String(previousId);
}"""


def shot(page: Page, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def card_id(page: Page) -> int:
    return int(page.locator("article.example").get_attribute("data-example-id") or 0)


def press_and_wait(page: Page, key: str) -> int:
    before = card_id(page)
    page.keyboard.press(key)
    page.wait_for_function(CARD_CHANGED_JS, arg=before)
    return before


def test_two_reviewers_disagree_and_the_lead_adjudicates_by_keyboard(
    live_server, page: Page, project, make_member, tmp_path: Path
) -> None:
    lead = make_member(Role.ML_LEAD)
    first, second = make_member(Role.REVIEWER), make_member(Role.REVIEWER)
    dataset = Dataset.objects.create(project=project, name="tickets")
    examples = [
        Example.objects.create(dataset=dataset, messages=chat(*TICKETS[i])) for i in range(4)
    ]
    review_url = f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/"

    # --- the lead sets overlap 2 and guidelines, then assigns everything to both reviewers ----
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/")
    page.get_by_role("link", name=re.compile("Review setup")).click()
    page.get_by_label("Reviewers per example (overlap)").fill("2")
    page.get_by_label("Guidelines (markdown)").fill(GUIDELINES)
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator(".messages")).to_contain_text("Saved the review settings.")
    expect(page.locator("#guidelines-preview h1")).to_have_text("Triage rules")
    expect(page.locator("#guidelines-preview")).to_contain_text("<b>raw</b>")  # shown, not run

    page.goto(review_url)
    page.locator("#bulk-action").select_option("assign")
    page.get_by_label(first.username).check()
    page.get_by_label(second.username).check()
    page.get_by_role("button", name="Review and confirm…").click()
    expect(page.locator("#bulk-confirm-text")).to_contain_text(
        f"This will assign 4 example(s) to {first.username}, {second.username}, 2 reviewer(s)"
    )
    page.locator("#bulk-confirm").click()
    expect(page.locator(".messages")).to_contain_text("Made 8 assignment(s)")
    assert ExampleAssignment.objects.count() == 8

    # --- reviewer one: approve, reject, edit, approve; a comment; guidelines toggled ----------
    login(page, live_server, first.username)
    page.goto(review_url)
    expect(page.locator("#filter-assignee")).to_have_value("me")
    guidelines = page.locator("#guidelines-body")
    expect(guidelines.locator("strong")).to_have_text("Billing")
    page.keyboard.press("g")
    expect(guidelines).to_be_hidden()
    page.keyboard.press("g")
    expect(guidelines).to_be_visible()

    page.keyboard.press("c")
    expect(page.locator("#comment-body")).to_be_focused()
    page.keyboard.type("Looks like billing to me.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#comment-list")).to_contain_text("Looks like billing to me.")
    assert card_id(page) == examples[0].pk
    page.wait_for_function(SETTLED_JS)  # htmx wires up the swapped card once it settles
    shot(page, tmp_path, "reviewer-card-with-comment")

    press_and_wait(page, "a")
    expect(page.locator("#last-decision")).to_contain_text("your vote (approve) is recorded")
    press_and_wait(page, "r")
    page.keyboard.press("e")
    expect(page.locator("#edit-answer")).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type(EDITED)
    expect(page.locator("#edit-diff ins")).to_contain_text('"billing",')  # the live diff
    before = card_id(page)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(CARD_CHANGED_JS, arg=before)
    press_and_wait(page, "a")
    expect(page.locator("#queue-empty")).to_be_visible()
    assert ReviewVote.objects.filter(reviewer=first).count() == 4
    assert set(Example.objects.values_list("status", flat=True)) == {ExampleStatus.PENDING}

    # --- reviewer two: disagrees on the first and the edited one -----------------------------
    login(page, live_server, second.username)
    page.goto(review_url)
    for key in ["r", "r", "a", "a"]:
        press_and_wait(page, key)
    expect(page.locator("#queue-empty")).to_be_visible()
    status = {e.pk: e.status for e in Example.objects.all()}
    assert [status[e.pk] for e in examples] == [
        ExampleStatus.DISPUTED,
        ExampleStatus.REJECTED,
        ExampleStatus.DISPUTED,
        ExampleStatus.APPROVED,
    ]

    # --- the lead sees agreement and adjudicates the disputes by keyboard ---------------------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/setup/")
    expect(page.locator("#agreement-items")).to_have_text("4")
    expect(page.locator("#agreement-percent")).to_have_text("50 %")
    shot(page, tmp_path, "agreement-panel")
    page.locator("#agreement-disputed a").click()
    expect(page.locator("#votes")).to_be_visible()
    assert card_id(page) == examples[0].pk
    expect(page.locator("#votes .vote")).to_have_count(2)
    shot(page, tmp_path, "adjudicator-votes-side-by-side")
    press_and_wait(page, "1")  # approve with reviewer one's answer (the answer as shown)
    assert card_id(page) == examples[2].pk
    expect(page.locator("#votes")).to_contain_text(EDITED)
    press_and_wait(page, "1")  # take reviewer one's edit
    expect(page.locator("#queue-empty")).to_be_visible()
    assert Example.objects.get(pk=examples[2].pk).messages[-1]["content"] == EDITED
    assert Example.objects.filter(status=ExampleStatus.DISPUTED).count() == 0

    # --- filters and a bulk tag on the approved billing examples ------------------------------
    page.goto(f"{review_url}?status=approved")
    page.keyboard.press("/")
    expect(page.locator("#filter-q")).to_be_focused()
    page.keyboard.type("billing")
    page.keyboard.press("Enter")
    expect(page.locator("#review-counts")).to_have_text("0 pending · 2 approved · 0 rejected")
    assert "q=billing" in page.url
    expect(page.locator("#diff-to-original")).to_have_count(0)
    page.locator("#bulk-action").select_option("tag")
    page.locator("#bulk-tag").fill("checked")
    page.get_by_role("button", name="Review and confirm…").click()
    expect(page.locator("#bulk-confirm-text")).to_contain_text(
        "This will tag 2 example(s) “checked”."
    )
    page.locator("#bulk-confirm").click()
    expect(page.locator(".messages")).to_contain_text("Tagged 2 example(s) 'checked'.")
    assert sorted(Tag.objects.get(name="checked").examples.values_list("pk", flat=True)) == sorted(
        [examples[0].pk, examples[2].pk]
    )
    assert ExampleComment.objects.get().author == first
