"""The confusion view in a real browser, on a run of 64 awkward labels (quotes, markup, accents,
up to 200 characters) over a thousand items: the heat map is drawn by the vendored Chart.js
with one square per non-zero cell, its axes cut long labels short while its tooltip names them
in full, the markup label stays text (no script runs), a closed candidate's heat map draws when
it is opened, the reliability chart of a candidate with confidences is drawn, and the page keeps
the Content-Security-Policy."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from ftportal.roles import Role
from tests.evaluation.label_runs import (
    SPECIAL_LABELS,
    Answers,
    awkward_labels,
    labelled_run,
    noisy_answers,
    skewed_expected,
)

from .conftest import ACTION_TIMEOUT_MS, chart_state, login

pytestmark = pytest.mark.e2e

LABELS = 64
ITEMS = 1200

# What the heat map's Chart.js instance holds: its datasets' names and cell counts, the size of
# its squares, and the axis ticks as drawn.
HEAT_STATE_JS = """(selector) => {
  const chart = window.Chart.getChart(document.querySelector(selector));
  const first = chart.getDatasetMeta(0).data[0];
  return {
    names: chart.data.datasets.map((d) => d.label),
    cells: chart.data.datasets.map((d) => d.data.length),
    radius: first ? first.options.radius : 0,
    yTicks: chart.scales.y.ticks.map((t) => t.label),
    yCount: chart.scales.y.getLabels().length,
  };
}"""


def hover_cell(page: Page, selector: str, dataset: int, index: int) -> list[str]:
    """Scrolls a drawn cell into view and moves the mouse onto it; returns the tooltip's title
    and lines."""
    x, y = page.evaluate(
        """([selector, dataset, index]) => {
          const canvas = document.querySelector(selector);
          const point = window.Chart.getChart(canvas).getDatasetMeta(dataset).data[index];
          window.scrollTo(0, canvas.getBoundingClientRect().top + window.scrollY + point.y - 300);
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


def test_the_confusion_view_of_sixty_four_awkward_labels(
    live_server, page: Page, browser: Browser, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    labels = awkward_labels(LABELS)
    expected = skewed_expected(labels, ITEMS)
    confident = noisy_answers(
        "label scoring", labels, expected, right=0.6, invalid=0.0, seed=5, confident=True
    )
    run = labelled_run(
        project=project,
        user=lead,
        base_model=base_model,
        labels=labels,
        expected=expected,
        candidates=[
            noisy_answers("fine-tuned", labels, expected, right=0.5, invalid=0.25, seed=4),
            Answers(confident.label, confident.outputs, confident.confidences, abstain_below=0.4),
        ],
    )
    fine_tuned, scoring = run.candidates.order_by("position")
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:  # an alert() would mean a label ran as a script
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    login(page, live_server, lead.username)

    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/")

    # The first candidate's view is open: its pairs, its labels worst first, its heat map.
    view = page.locator(f'details.confusion[data-candidate="{fine_tuned.pk}"]')
    expect(view.locator("table.confused-pairs tbody tr")).to_have_count(20)
    expect(view.locator("table.per-label tbody tr")).to_have_count(LABELS)
    # The markup label is shown as the text it is, and never ran.
    expect(view.locator("td.label-name", has_text=SPECIAL_LABELS[2]).first).to_be_visible()
    selector = f'canvas[data-chart="confusion-heatmap-{fine_tuned.pk}"]'
    chart = chart_state(page, selector)
    assert (chart["xTitle"], chart["yTitle"]) == ("Answered", "Expected")
    assert chart["legend"] == ["Right", "Another label", "No label (invalid)"]
    # Tall enough for every row, as wide as the page allows.
    assert chart["height"] > LABELS * 8 and chart["width"] > 800
    stored = fine_tuned.metrics["labels"]["confusion"]["matrix"]
    heat: dict[str, Any] = page.evaluate(HEAT_STATE_JS, selector)
    non_zero = sum(1 for row in stored for count in row if count)
    assert sum(heat["cells"]) == non_zero < LABELS * (LABELS + 1)
    assert heat["cells"][2] > 0  # invalid answers have their own column
    assert heat["radius"] > 2  # squares big enough to point at
    assert heat["yCount"] == LABELS
    # Long labels are cut short on the axis...
    long_label = next(label for label in labels if len(label) == 200)
    assert all(len(tick) <= 28 for tick in heat["yTicks"])
    # (in the middle, so labels sharing a long opening still differ at their ends).
    shortened = [tick.split("…") for tick in heat["yTicks"] if "…" in tick]
    assert any(
        long_label.startswith(head) and long_label.endswith(tail) for head, tail in shortened
    )
    assert len({tick for tick in heat["yTicks"]}) == LABELS  # no two rows read alike

    # ...and named in full where one points: the most confused pair's cell.
    top = page.locator(
        f'details.confusion[data-candidate="{fine_tuned.pk}"] table.confused-pairs tbody tr'
    ).first
    top_expected, top_answered, top_count = (
        top.locator("td").nth(i).inner_text() for i in range(3)
    )
    index: int = page.evaluate(
        """([selector, expected, answered]) => {
          const chart = window.Chart.getChart(document.querySelector(selector));
          const y = chart.scales.y.getLabels(), x = chart.scales.x.getLabels();
          for (const [set, dataset] of chart.data.datasets.entries()) {
            const at = dataset.data.findIndex((c) => y[c.y] === expected && x[c.x] === answered);
            if (at >= 0) { return set * 100000 + at; }
          }
          return -1;
        }""",
        [selector, top_expected, top_answered],
    )
    assert index >= 0, (top_expected, top_answered)
    lines = hover_cell(page, selector, index // 100000, index % 100000)
    assert lines[0] == f"Expected: {top_expected}" and lines[1] == f"Answered: {top_answered}"
    assert (
        lines[2].startswith(f"{top_count} answers (")
        and "of the expected label's items" in lines[2]
    )

    # The second candidate's view is closed; opened, its heat map is drawn at full size.
    other = page.locator(f'details.confusion[data-candidate="{scoring.pk}"]')
    other.locator("summary").click()
    other_chart = chart_state(page, f'canvas[data-chart="confusion-heatmap-{scoring.pk}"]')
    assert other_chart["width"] > 800 and other_chart["height"] > LABELS * 8

    # Its confidences: abstention in the summary table, calibration with its reliability chart.
    row = page.locator(f'#label-summary tr[data-candidate="{scoring.pk}"]')
    abstention = scoring.metrics["abstention"]
    expect(row.locator("td.abstention")).to_contain_text(
        f"{abstention['answered']} / {abstention['abstained']}"
    )
    page.locator(f'details.calibration[data-candidate="{scoring.pk}"] summary').click()
    reliability = chart_state(page, f'canvas[data-chart="reliability-{scoring.pk}"]')
    assert reliability["legend"] == ["label scoring", "Calibrated"]
    assert reliability["datasets"][1]["points"] == [[0, 0], [1, 1]]
    assert dialogs == []

    # The same page under the enforced Content-Security-Policy: drawn, nothing refused.
    strict = browser.new_context(viewport={"width": 1280, "height": 900})
    strict.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        strict_page = strict.new_page()
        login(strict_page, live_server, lead.username)
        strict_page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " (e) => window.__csp.push(e.violatedDirective));"
        )
        strict_page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/")
        strict_page.locator(selector).wait_for()
        strict_page.wait_for_load_state("load")
        drawn = strict_page.evaluate(
            "(s) => !!window.Chart.getChart(document.querySelector(s))", selector
        )
        assert drawn
        assert strict_page.evaluate("() => window.__csp") == []
    finally:
        strict.close()
