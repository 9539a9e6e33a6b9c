"""Production feedback back into the data, in a real browser: a lead creates an application
key on its page (shown once), an application calls the gateway (real uvicorn) with the
official ``openai`` client and that key, then posts thumbs-down feedback with a correction to
/v1/feedback; a reviewer filters the request log by feedback, sends the request to review, and
finds it in the review queue with the correction as the proposed answer and the request id as
provenance. The served version is a hosted ``ft:`` model at the fake OpenAI server."""

from __future__ import annotations

import re

import openai
import pytest
import requests
from playwright.sync_api import Page, expect

from datasets.models import Dataset, Example, ExampleStatus
from fakes.chat_servers import FakeOpenAIChatServer, expected_answer, fake_openai_chat_fixture  # noqa: F401
from ftportal.roles import Role
from serving.models import Feedback, RequestLog
from tests.serving.gateway_server import fake_chat_key, running_gateway  # noqa: F401
from tests.serving.test_gateway import hosted_version, promote

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("fake_chat_key")]
QUESTION = "I was charged twice for my subscription"
CORRECTION = '{"category": "billing", "priority": "high"}'


def test_feedback_from_an_application_becomes_an_example_in_the_review_queue(
    live_server, page: Page, project, make_member, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    lead, reviewer = make_member(Role.ML_LEAD), make_member(Role.REVIEWER)
    dataset = Dataset.objects.create(project=project, name="tickets")
    promote(hosted_version(project, lead, fake_openai_chat), lead)

    # --- the lead creates an application key; its plaintext is on this page only ----------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/app-keys/")
    page.get_by_label("Name").fill("support bot")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#created-key")).to_contain_text("shown only this once")
    key = page.locator("#created-key-value").inner_text().strip()
    assert re.fullmatch(r"ftp_[0-9a-f]{12}\.[A-Za-z0-9_-]{43}", key)

    # --- the application calls the gateway with it, then reports the answer was wrong ------
    with running_gateway() as origin:
        api = openai.OpenAI(base_url=f"{origin}/v1", api_key=key, max_retries=0, timeout=60)
        answer = api.chat.completions.create(
            model="Ticket triage/production",
            messages=[{"role": "user", "content": QUESTION}],
            user="customer-42",
        )
        assert answer.choices[0].message.content == expected_answer(QUESTION)
        feedback = requests.post(
            f"{origin}/v1/feedback",
            json={
                "request_id": answer.id,
                "thumbs": "down",
                "comment": "this is a billing question",
                "correction": CORRECTION,
                "user": "customer-42",
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert feedback.status_code == 201, feedback.text
    # Leaving the gateway wrote its queued log rows (a clean shutdown loses none).
    assert RequestLog.objects.filter(request_id=answer.id, project=project).exists()
    assert Feedback.objects.get(request_id=answer.id).score == 0.0

    # --- the reviewer finds it by its feedback and sends it to review ----------------------
    login(page, live_server, reviewer.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/requests/")
    page.locator("#feedback-filter").select_option("down")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"feedback=down"))
    row = page.locator(f"#request-{answer.id}")
    expect(row.locator(".request-feedback")).to_contain_text("thumbs down")
    expect(row.locator(".feedback-correction")).to_contain_text(CORRECTION)
    expect(row.locator(".feedback-comment")).to_contain_text("this is a billing question")
    expect(page.locator("#request-log-list tbody tr")).to_have_count(1)
    page.get_by_label(f"choose {answer.id}").check()
    page.get_by_label("Dataset").select_option(str(dataset.pk))
    page.get_by_role("button", name="Send chosen requests to review").click()
    expect(page.locator(".messages")).to_contain_text("Sent 1 of 1 requests to review")

    # --- and finds it in the review queue: the correction proposed, the request named ------
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/")
    card = page.locator("article.example")
    expect(card.locator("#card-provenance")).to_contain_text(f"From production request {answer.id}")
    expect(card.locator("#card-provenance")).to_contain_text(
        "The proposed answer is the application's correction."
    )
    expect(card.locator(".conversation .role-user .content")).to_have_text(QUESTION)
    expect(card.locator(".conversation .role-assistant .content")).to_have_text(CORRECTION)
    example = Example.objects.get(dataset=dataset)
    assert example.status == ExampleStatus.PENDING
    assert example.metadata["request_id"] == answer.id
    assert example.metadata["model_output"] == expected_answer(QUESTION)
