"""The Content-Security-Policy in a real browser: a lead walks through the main pages (project,
review queue, a training job with its charts, the evaluation dashboard with a chart, blind
rating, the API docs) and Chromium reports no policy violation and no console error; the rating
page's candidate picker still submits itself without its old inline handler."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from evaluation.models import CandidateKind
from evaluation.services import CandidateSpec
from ftportal.roles import Role
from tests.api.builders import register_model_version
from tests.evaluation.finished_runs import finished_run
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob, TrainingMetric

from .conftest import ACTION_TIMEOUT_MS, CHART_STATE_JS, login

pytestmark = pytest.mark.e2e

# Runs in every document before its own scripts: keeps each violation the browser reports.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ` +
    `${event.sourceFile}:${event.lineNumber}`);
});
"""


def watch(page: Page) -> list[str]:
    problems: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        # The browser's own request for /favicon.ico is no page's doing.
        if message.location.get("url", "").endswith("/favicon.ico"):
            return
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", keep)
    page.add_init_script(RECORD_VIOLATIONS)
    return problems


@pytest.fixture
def strict_page(browser: Browser) -> Iterator[Page]:
    """A context that enforces the policy (the shared ``page`` fixture bypasses it, because
    Playwright's wait_for_function polls with eval), failing on uncaught script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert not script_errors, f"uncaught script errors in the page: {script_errors}"


def drawn_chart(page: Page, selector: str) -> dict[str, Any]:
    """Waits for Chart.js to draw on the canvas, polling from here: evaluate() comes from the
    test, which the policy allows, where wait_for_function's in-page eval() would be refused."""
    deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        state: dict[str, Any] | None = page.evaluate(CHART_STATE_JS, selector)
        if state is not None:
            return state
        time.sleep(0.1)
    raise AssertionError(f"no chart was drawn on {selector}")


def violations(page: Page) -> list[Any]:
    found: list[Any] = page.evaluate("() => window.__cspViolations || []")
    return found


def test_the_main_pages_run_under_the_policy_without_violations(
    live_server, strict_page: Page, project, make_member, base_model
) -> None:
    page = strict_page
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead)
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="tickets-ft",
        created_by=lead,
        status=JobStatus.RUNNING,  # so the page polls through htmx
        step=2,
        total_steps=4,
    )
    for step in (1, 2):
        TrainingMetric.objects.create(
            job=job, step=step, epoch=step / 4, train_loss=2.0 - step / 4, learning_rate=2e-4
        )
    items = version.validation_count
    tuned = [
        register_model_version(version=version, base_model=base_model, user=lead, model_name="m")
        for _ in range(2)
    ]
    run = finished_run(
        version=version,
        user=lead,
        answers=[
            (CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned[0]), [True]),
            (CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned[1]), [False]),
            (CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [False] * items),
        ],
    )
    problems = watch(page)
    login(page, live_server, lead.username)
    base = f"{live_server.url}/projects/{project.pk}"
    seen: dict[str, list[Any]] = {}

    def visit(path: str) -> None:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.ok, path
        # The policy is in force on the page (without it, no violation could be reported).
        assert "script-src 'self'" in response.headers.get("content-security-policy", ""), path
        page.wait_for_load_state("networkidle")
        seen[path] = violations(page)

    visit("/")
    visit(f"/datasets/{version.dataset.pk}/review/")
    visit(f"/training-jobs/{job.pk}/")
    assert drawn_chart(page, 'canvas[data-chart="loss-chart-data"]')["datasets"]
    visit("/evaluations/")
    assert page.locator("canvas[data-chart]").count() >= 1
    assert drawn_chart(page, "canvas[data-chart]")["datasets"]
    visit(f"/evaluations/{run.pk}/")
    visit(f"/evaluations/{run.pk}/rate/")
    # The candidate picker submits its form on change (static/js/actions.js, not onchange=).
    third = run.candidates.order_by("pk")[2]
    page.get_by_label("Compare the reference with").select_option(str(third.pk))
    page.wait_for_url(f"**/rate/?b={third.pk}")
    seen["rate?b"] = violations(page)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    seen["/api/docs/"] = violations(page)
    page.goto(f"{live_server.url}/password/")
    seen["/password/"] = violations(page)

    assert {path: found for path, found in seen.items() if found} == {}
    assert not problems, problems


def test_the_policy_header_reaches_the_browser(live_server, strict_page: Page) -> None:
    response = strict_page.goto(f"{live_server.url}/login/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe" not in policy
