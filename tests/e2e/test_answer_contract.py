"""The answer contract in a real browser: a lead declares a JSON Schema on the dataset page; a
reviewer sees the contract finding on the card, is asked before approving a broken answer,
edits it into one that keeps the contract (checked as they type), and the finding is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from datasets.models import Dataset, Example, ExampleStatus
from ftportal.roles import Role
from tests.factories import chat

from .conftest import login

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "bug", "account", "feature_request"]},
        "priority": {"enum": ["low", "medium", "high"]},
    },
    "required": ["category", "priority"],
    "additionalProperties": False,
}
FIXED = '{"category": "billing", "priority": "high"}'
SETTLED_JS = """() => !document.querySelector('#review-card')
  .matches('.htmx-request, .htmx-swapping, .htmx-settling')"""


def broken(ticket: str, answer: str) -> list[dict[str, str]]:
    messages = chat(ticket, "billing", "high")
    messages[-1]["content"] = answer
    return messages


def test_a_reviewer_fixes_an_answer_that_breaks_the_contract(
    live_server, page: Page, project, make_member, tmp_path: Path
) -> None:
    lead, reviewer = make_member(Role.ML_LEAD), make_member(Role.REVIEWER)
    dataset = Dataset.objects.create(project=project, name="tickets")
    not_json = Example.objects.create(
        dataset=dataset, messages=broken("I was charged twice", "Category: billing, high")
    )
    urgent = Example.objects.create(
        dataset=dataset,
        messages=broken("Site down", '{"category": "bug", "priority": "urgent"}'),
    )

    # --- the lead declares the contract on the dataset page -----------------------------------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/")
    page.locator("#contract-kind").select_option(label="JSON Schema")
    page.locator("#contract-value").fill(json.dumps(SCHEMA, indent=2))
    page.get_by_role("button", name="Save contract").click()
    expect(page.locator(".messages")).to_contain_text("Answer contract saved")
    expect(page.locator("#contract-description")).to_contain_text(
        "JSON matching a schema with category, priority"
    )

    # --- the reviewer sees the finding on the card before deciding ----------------------------
    login(page, live_server, reviewer.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/")
    finding = page.locator('#card-findings [data-kind="contract_violation"]')
    expect(finding).to_contain_text("Breaks the answer contract")
    expect(finding).to_contain_text("not valid JSON")
    assert page.locator("article.example").get_attribute("data-example-id") == str(not_json.pk)
    page.wait_for_function(SETTLED_JS)
    page.screenshot(path=str(tmp_path / "contract-finding.png"), full_page=True)

    # Approving it anyway asks first, and nothing is decided yet.
    page.keyboard.press("a")
    expect(page.locator("#contract-confirm")).to_contain_text("breaks the answer contract")
    not_json.refresh_from_db()
    assert not_json.status == ExampleStatus.PENDING
    page.wait_for_function(SETTLED_JS)

    # --- editing: the check runs as the reviewer types ---------------------------------------
    page.keyboard.press("e")
    expect(page.locator("#edit-answer")).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type('{"category": "billing"}')
    expect(page.locator("#edit-contract")).to_contain_text("'priority' is a required property")
    page.keyboard.press("Control+a")
    page.keyboard.type(FIXED)
    expect(page.locator("#edit-contract")).to_have_text("Keeps the answer contract.")
    page.keyboard.press("Control+Enter")
    # Saved without a question; the queue moves on to the next broken answer.
    expect(page.locator("article.example")).to_have_attribute("data-example-id", str(urgent.pk))
    expect(page.locator('#card-findings [data-kind="contract_violation"]')).to_contain_text(
        "'urgent' is not one of"
    )
    not_json.refresh_from_db()
    assert not_json.status == ExampleStatus.APPROVED
    assert not_json.messages[-1]["content"] == FIXED

    # --- the fixed example's card no longer shows the finding ---------------------------------
    page.goto(
        f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/"
        f"?status=approved&example={not_json.pk}"
    )
    expect(page.locator("article.example")).to_have_attribute("data-example-id", str(not_json.pk))
    expect(page.locator('[data-kind="contract_violation"]')).to_have_count(0)
