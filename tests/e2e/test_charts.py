"""Charts in a real browser: the job page's loss, learning-rate and speed curves and the
evaluation dashboard are drawn by the vendored Chart.js with titled axes and legends, the job
page's charts follow new metrics while it polls without piling up chart instances, a
checkpoint sweep shows the task metric and the validation loss on two axes, and nothing is
reported to the console."""

from __future__ import annotations

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from evaluation.models import CandidateKind, EvalKind
from evaluation.services import CandidateSpec
from ftportal.roles import Role
from registry.models import RegisteredModel
from tests.api.builders import register_model_version
from tests.evaluation.finished_runs import finished_run
from tests.factories import frozen_version
from training.models import Checkpoint, JobStatus, TrainingJob, TrainingMetric

from .conftest import CHART_STATE_JS, chart_state, login

pytestmark = pytest.mark.e2e

LOSS = 'canvas[data-chart="loss-chart-data"]'


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        # The browser's own request for /favicon.ico is no page's doing (issue 12, item 10).
        if message.location.get("url", "").endswith("/favicon.ico"):
            return
        if message.type in ("error", "warning"):
            errors.append(f"{message.type}: {message.text} ({message.location.get('url')})")

    page.on("console", keep)
    return errors


def hover_point(page: Page, selector: str, dataset: int, index: int) -> list[str]:
    """Moves the mouse onto a drawn point; returns the tooltip's title and lines."""
    x, y = page.evaluate(
        """([selector, dataset, index]) => {
          const chart = window.Chart.getChart(document.querySelector(selector));
          const point = chart.getDatasetMeta(dataset).data[index];
          return [point.x, point.y];
        }""",
        [selector, dataset, index],
    )
    box = page.locator(selector).bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function(
        "(s) => window.Chart.getChart(document.querySelector(s)).tooltip.opacity > 0", arg=selector
    )
    lines: list[str] = page.evaluate(
        """(s) => {
          const tooltip = window.Chart.getChart(document.querySelector(s)).tooltip;
          return [...tooltip.title, ...tooltip.body.flatMap((b) => b.lines)];
        }""",
        selector,
    )
    return lines


def test_the_job_page_draws_its_curves_and_follows_new_steps(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="tickets-ft",
        created_by=lead,
        status=JobStatus.RUNNING,  # so the page polls
        step=4,
        total_steps=10,
    )
    for step in range(1, 5):
        TrainingMetric.objects.create(
            job=job,
            step=step,
            epoch=step / 10,
            train_loss=2.0 - 0.25 * step,
            val_loss=1.6 if step == 4 else None,
            learning_rate=2e-4,
            tokens_per_second=850.0,
        )
    errors = console_errors(page)
    login(page, live_server, lead.username)

    page.goto(f"{live_server.url}/projects/{project.pk}/training-jobs/{job.pk}/")

    loss = chart_state(page, LOSS)
    assert loss["width"] > 100 and loss["height"] > 100
    assert loss["datasets"] == [
        {"label": "Training loss", "points": [[1, 1.75], [2, 1.5], [3, 1.25], [4, 1.0]]},
        {"label": "Validation loss", "points": [[4, 1.6]]},
    ]
    assert loss["legend"] == ["Training loss", "Validation loss"]
    assert (loss["xTitle"], loss["yTitle"]) == ("Step", "Loss (cross-entropy per token)")
    assert loss["xTicks"][0] == "0" and loss["xTicks"][-1] == "10"  # to the planned last step
    lr = chart_state(page, 'canvas[data-chart="lr-chart-data"]')
    assert lr["yTitle"] == "Learning rate" and lr["datasets"][0]["points"][0] == [1, 2e-4]
    assert lr["width"] > 0 and lr["height"] > 0
    speed = chart_state(page, 'canvas[data-chart="speed-chart-data"]')
    assert speed["yTitle"] == "Tokens per second" and len(speed["datasets"][0]["points"]) == 4
    assert hover_point(page, LOSS, 1, 0) == ["Step 4", "Validation loss: 1.6"]

    # The worker writes step 5; the next poll swaps the status block and redraws its charts.
    page.evaluate("() => { window.__jobPageLoaded = true; }")
    TrainingMetric.objects.create(job=job, step=5, epoch=0.5, train_loss=0.9, learning_rate=1e-4)
    page.wait_for_function(
        f"({CHART_STATE_JS})({LOSS!r})?.datasets[0].points.length === 5", timeout=20_000
    )
    assert page.evaluate("() => window.__jobPageLoaded") is True  # updated in place
    # Each poll replaced the canvases; the charts drawn on the old ones were destroyed.
    live, drawn = page.evaluate(
        """() => [Object.keys(window.Chart.instances).length,
                  document.querySelectorAll("canvas[data-chart]").length]"""
    )
    assert live == drawn == 3
    expect(page.locator("#loss-chart figcaption")).to_contain_text("training loss 0.9000")
    assert not errors, errors


def test_the_dashboard_draws_each_metric_by_version_per_candidate(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead)
    items = version.validation_count
    for right in (1, 2):  # v1 gets one item right, v2 two
        tuned = register_model_version(
            version=version, base_model=base_model, user=lead, model_name="triage"
        )
        finished_run(
            version=version,
            user=lead,
            answers=[
                (
                    CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned),
                    [i < right for i in range(items)],
                ),
                (CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [False] * items),
            ],
        )
    model = RegisteredModel.objects.get(project=project, name="triage")
    errors = console_errors(page)
    login(page, live_server, make_member(Role.MANAGER).username)

    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/")

    selector = f'canvas[data-chart="model-{model.pk}-exact_match-chart"]'
    chart = chart_state(page, selector)
    assert chart["width"] > 100 and chart["height"] > 100
    assert chart["legend"] == ["fine-tuned version", "SmolLM2-135M-Instruct (zero-shot)"]
    assert [d["label"] for d in chart["datasets"]] == chart["legend"]
    assert (chart["xTitle"], chart["yTitle"]) == ("Model version", "Exact match (%)")
    assert chart["xTicks"] == ["v1", "v2"]
    assert hover_point(page, selector, 0, 1) == [
        "Model version v2",
        f"fine-tuned version: {2 / items * 100:.1f} %",
    ]
    drawn = page.locator("canvas[data-chart]")
    assert drawn.count() == page.locator("figure[data-metric]").count() >= 1
    assert page.evaluate("() => Object.keys(window.Chart.instances).length") == drawn.count()
    assert not errors, errors


def test_a_checkpoint_sweep_draws_the_task_metric_and_the_loss_on_two_axes(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = frozen_version(project, lead)
    job = register_model_version(
        version=version, base_model=base_model, user=lead, model_name="triage"
    ).training_job
    assert job is not None
    early = Checkpoint.objects.create(job=job, step=10, path="/a/10", val_loss=0.9)
    late = Checkpoint.objects.create(job=job, step=20, path="/a/20", val_loss=0.5)
    items = version.validation_count
    run = finished_run(
        version=version,
        user=lead,
        kind=EvalKind.CHECKPOINTS,
        training_job=job,
        answers=[
            (CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=early), [True] * items),
            (CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=late), [False] * items),
        ],
    )
    errors = console_errors(page)
    login(page, live_server, lead.username)

    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/")

    selector = 'canvas[data-chart="sweep-chart-data"]'
    chart = chart_state(page, selector)
    assert chart["width"] > 100 and chart["height"] > 100
    assert chart["legend"] == ["Exact match", "Validation loss"]
    assert chart["datasets"][1]["points"] == [[10, 0.9], [20, 0.5]]
    assert (chart["xTitle"], chart["yTitle"]) == ("Checkpoint step", "Exact match (%)")
    y2_title = page.evaluate(
        f"""() => window.Chart.getChart(document.querySelector({selector!r}))
            .options.scales.y2.title.text"""
    )
    assert y2_title == "Loss (cross-entropy per token)"
    # The two series share a pixel at each step here (100 % and the highest loss at the top,
    # 0 % and the lowest at the bottom): the tooltip lists both.
    assert hover_point(page, selector, 1, 1) == [
        "Checkpoint step 20",
        "Exact match: 0.0 %",
        "Validation loss: 0.5",
    ]
    assert not errors, errors
