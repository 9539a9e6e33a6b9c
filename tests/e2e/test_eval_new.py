"""Starting an evaluation in a real browser: an ML lead picks the test set and the candidates
(the local base model and an OpenAI-compatible endpoint, here the fake), the worker scores
them, and the page shows the progress, the numbers and the verdict without a reload."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from evaluation.models import EvalRun
from fakes.chat_servers import (
    DEFAULT_API_KEY,
    FakeOpenAIChatServer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.roles import Role
from tests.factories import fake_endpoint, frozen_version

from .conftest import login
from .test_lifecycle import error_text, wait_until_finished

pytestmark = pytest.mark.e2e
# The worker reads the endpoint's key from the variable its admin named; it inherits this
# process's environment when the session starts it.
KEY_ENV = "FTPORTAL_TEST_E2E_CHAT_KEY"
os.environ.setdefault(KEY_ENV, DEFAULT_API_KEY)


def test_a_lead_starts_an_evaluation_and_reads_the_verdict(
    live_server,
    page: Page,
    project,
    make_member,
    base_model,
    celery_worker_process,
    fake_openai_chat: FakeOpenAIChatServer,
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead)
    # An admin registered the fake as an endpoint; the lead only picks it by name.
    endpoint = fake_endpoint(fake_openai_chat.base_url, secret_env=KEY_ENV)
    login(page, live_server, lead.username)

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.locator("#evaluations-link").click()
    page.locator("#new-evaluation").click()
    page.locator("#eval-dataset-version").select_option(str(version.pk))
    page.locator("select[name=base_model]").select_option(base_model.key)
    page.locator("input[name=few_shot_k]").fill("0")
    page.locator("select[name=external_endpoint]").select_option(endpoint.name)
    page.locator("input[name=external_model]").fill("gpt-4o-mini")
    page.locator("input[name=external_input_price]").fill("0.30")
    page.locator("input[name=external_output_price]").fill("1.20")
    page.locator("input[name=max_new_tokens]").fill("8")
    page.locator("#start-evaluation").click()

    expect(page.get_by_role("heading", name=re.compile(r"^Evaluation \d+$"))).to_be_visible()
    page.evaluate("() => { window.__evalPageLoaded = true; }")
    status = wait_until_finished(page, "#eval-status")
    assert status == "Succeeded", error_text(page, "#eval-body")
    assert page.evaluate("() => window.__evalPageLoaded") is True  # updated in place

    run = EvalRun.objects.get()
    local, hosted = run.candidates.all()
    rows = page.locator("#eval-summary tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("SmolLM2-135M-Instruct (zero-shot)")
    expect(rows.nth(1)).to_contain_text("gpt-4o-mini via OpenAI-compatible (zero-shot)")
    expect(rows.nth(1)).to_contain_text("$")  # the hosted candidate's cost per 1k requests
    expect(page.locator("#verdicts li")).to_have_count(1)
    expect(page.locator("#eval-comparisons tbody tr").first).to_be_visible()
    assert fake_openai_chat.total_requests == version.validation_count
    assert hosted.results.count() == local.results.count() == version.validation_count

    page.locator("#eval-spend").wait_for()
    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/")
    expect(page.locator("#eval-runs tbody tr")).to_have_count(1)
    expect(page.locator("#eval-runs tbody tr").first).to_contain_text("Succeeded")
