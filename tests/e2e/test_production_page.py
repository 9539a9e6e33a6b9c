"""A manager opens an alias's production page from the project page in a real browser: every
chart is drawn by the vendored Chart.js on the hour labels of the range, the promotion is in
each chart's marker options and drawn as a dashed line where the axis puts its hour, and the
browser reports nothing wrong."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role
from serving.model_names import alias_model_name
from tests.monitoring.traffic_builders import (
    alias_change,
    alias_to,
    generated_rows,
    rows_store,
    served_version,
)

from .conftest import chart_state, login
from .test_charts import console_errors

pytestmark = pytest.mark.e2e

CHARTS = ("requests", "latency", "rates", "cost", "feedback", "outcomes")

# What the marker plugin was given, and where on the canvas the x axis puts each marker.
MARKERS_JS = """(selector) => {
  const chart = window.Chart.getChart(document.querySelector(selector));
  const given = (chart.options.plugins.markers || {}).markers || [];
  return {
    plugins: chart.config.plugins.map((plugin) => plugin.id),
    markers: given,
    pixels: given.map(
      (m) => chart.scales.x.getPixelForValue(chart.scales.x.getLabels().indexOf(m.x))),
    area: [chart.chartArea.left, chart.chartArea.right],
  };
}"""


def test_the_production_page_draws_its_charts_with_the_promotion_marked(
    live_server,
    page: Page,
    project: Project,
    lead: User,
    make_member: Callable[..., User],
    base_model: BaseModel,
) -> None:
    first = served_version(project, lead, base_model)
    second = served_version(project, lead, base_model)
    alias_to(second)
    now = timezone.now()
    promoted = alias_change(second, user=lead, at=now - timedelta(hours=5), from_version=first)
    model = second.registered_model
    rows_store(
        project,
        generated_rows(
            seed=3,
            count=300,
            names=[alias_model_name(project, model, "production")],
            start=now - timedelta(hours=20),
            span=timedelta(hours=19),
            version_ids=[first.pk, second.pk],
        ),
    )
    errors = console_errors(page)
    login(page, live_server, make_member(Role.MANAGER).username)

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.locator("#production-link").click()
    page.get_by_role("link", name="triage/production").click()
    page.locator('input[name="days"]').fill("2")
    page.locator("#production-show").click()

    expect(page.locator("#alias-change-list")).to_contain_text("Promoted")
    hour = promoted.created_at.strftime("%Y-%m-%d %H:00")
    assert page.locator("canvas[data-chart]").count() == len(CHARTS)
    for key in CHARTS:
        selector = f'canvas[data-chart="production-{key}-chart"]'
        drawn = chart_state(page, selector)
        assert drawn["width"] > 100 and drawn["height"] > 100
        assert drawn["xTitle"] == "Hour (UTC)"
        markers = page.evaluate(MARKERS_JS, selector)
        assert markers["plugins"] == ["markers"]
        assert markers["markers"] == [{"x": hour, "label": "Promoted to v2"}]
        left, right = markers["area"]
        assert left < markers["pixels"][0] < right
    requests = chart_state(page, 'canvas[data-chart="production-requests-chart"]')
    assert requests["legend"] == ["Requests", "Errors"]
    assert sum(y for _, y in requests["datasets"][0]["points"]) > 0
    assert page.evaluate("() => Object.keys(window.Chart.instances).length") == len(CHARTS)
    assert not errors, errors
