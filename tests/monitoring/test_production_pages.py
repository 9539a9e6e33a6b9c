"""The production pages and their API: every member reads them and nobody else learns they
exist; a wrong range is a 400 naming its parameter; the charts carry the alias's promotions
and rollbacks as markers, and the table lists them; the latest drift report shows its figures
(drifted ones flagged) and its most drifted requests, each linked to its place in the request
log and sent to review through serving's own form by those who may; hostile names and texts
are escaped everywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import BaseModel
from datasets.models import Dataset, Example
from ftportal.models import Project
from ftportal.roles import Role
from monitoring.figures import window_figures
from monitoring.models import DriftReport, DriftStatus
from registry.models import AliasChangeKind, ModelVersion
from serving.model_names import alias_model_name
from serving.models import RequestLog, RequestStatus
from tests.charts import page_charts, series_points
from tests.monitoring.traffic_builders import (
    Row,
    alias_change,
    alias_to,
    generated_rows,
    rows_store,
    served_version,
)
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

pytestmark = pytest.mark.django_db

ALL_ROLES = list(Role)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def alias_url(version: ModelVersion, alias: str = "production", **query: object) -> str:
    model = version.registered_model
    url = reverse("production_alias", args=[model.project_id, model.pk, alias])
    if query:
        url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
    return url


def api_url(version: ModelVersion, alias: str = "production") -> str:
    model = version.registered_model
    return reverse("api:production_alias_figures", args=[model.project_id, model.pk, alias])


class Served:
    """A model with v1 then v2 in production (promoted 3 hours ago), a day of traffic."""

    def __init__(self, project: Project, lead: User, base_model: BaseModel) -> None:
        self.project = project
        self.lead = lead
        self.v1 = served_version(project, lead, base_model)
        self.v2 = served_version(project, lead, base_model)
        self.model = self.v1.registered_model
        alias_to(self.v2)
        alias_to(self.v1, "staging")
        self.now = timezone.now()
        self.promoted = alias_change(
            self.v2,
            user=lead,
            at=self.now - timedelta(hours=3),
            from_version=self.v1,
            reason="better on the held-out split",
        )
        self.long_ago = alias_change(self.v1, user=lead, at=self.now - timedelta(days=40))
        self.rows = generated_rows(
            seed=5,
            count=400,
            names=[alias_model_name(project, self.model, "production")],
            start=self.now - timedelta(hours=23),
            span=timedelta(hours=22),
            version_ids=[self.v2.pk],
        )
        rows_store(project, self.rows)


@pytest.fixture
def served(project: Project, lead: User, base_model: BaseModel) -> Served:
    return Served(project, lead, base_model)


# --- who reads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_member_reads_the_overview_and_the_alias_page(
    served: Served, make_member: Callable[..., User], role: Role
) -> None:
    client = logged_in(make_member(role))

    overview = client.get(reverse("production_overview", args=[served.project.pk]))
    page = client.get(alias_url(served.v2))

    assert overview.status_code == page.status_code == 200
    assert alias_url(served.v2) in overview.content.decode()
    assert "production" in page_text(page)


def test_the_overview_lists_production_first_with_its_last_day(served: Served) -> None:
    page = logged_in(served.lead).get(reverse("production_overview", args=[served.project.pk]))

    html = page.content.decode()
    production_row = html.index(
        f'id="production-alias-{served.model.aliases.get(name="production").pk}"'
    )
    staging_row = html.index(f'id="production-alias-{served.model.aliases.get(name="staging").pk}"')
    assert production_row < staging_row
    counted = sum(row.counted for row in served.rows)
    assert f'<td class="figure-requests">{counted:,}</td>' in html


def test_the_project_page_links_to_production(served: Served) -> None:
    page = logged_in(served.lead).get(reverse("project_detail", args=[served.project.pk]))

    assert reverse("production_overview", args=[served.project.pk]) in page.content.decode()


def test_outsiders_learn_nothing_and_anonymous_visitors_sign_in(
    served: Served, make_member: Callable[..., User]
) -> None:
    other = Project.objects.create(name="Elsewhere")
    outsider = make_member(Role.ADMIN, target=other)
    stranger = User.objects.create_user(username="stranger", password="pw")
    urls = [reverse("production_overview", args=[served.project.pk]), alias_url(served.v2)]

    for user in (outsider, stranger):
        for url in urls:
            assert logged_in(user).get(url).status_code == 404
        api = APIClient()
        api.force_authenticate(user)
        answer = api.get(api_url(served.v2))
        assert answer.status_code == 404 and "error" in answer.json()
    for url in urls:
        visit = Client().get(url)
        assert visit.status_code == 302 and visit["Location"].startswith("/login/")
    assert APIClient().get(api_url(served.v2)).status_code in (401, 403)


def test_another_projects_model_or_an_unknown_alias_is_not_found(
    served: Served, make_member: Callable[..., User], base_model: BaseModel
) -> None:
    other = Project.objects.create(name="Elsewhere")
    theirs = served_version(other, make_member(Role.ML_LEAD, target=other), base_model)
    alias_to(theirs)
    client = logged_in(served.lead)

    # Their model's id under our project: as unknown as any id.
    url = reverse(
        "production_alias", args=[served.project.pk, theirs.registered_model.pk, "production"]
    )
    assert client.get(url).status_code == 404
    assert client.get(alias_url(served.v2, "canary")).status_code == 404


# --- the range ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"days": "abc"}, "days"),
        ({"days": "0"}, "days"),
        ({"days": "367"}, "days"),
        ({"days": "²"}, "days"),
        ({"days": "9" * 30}, "days"),
        ({"bucket": "month"}, "bucket"),
        ({"bucket": "<b>"}, "bucket"),
        ({"days": "30", "bucket": "hour"}, "bucket"),
    ],
)
def test_a_wrong_range_is_a_400_naming_the_parameter(
    served: Served, query: dict[str, str], field: str
) -> None:
    page = logged_in(served.lead).get(alias_url(served.v2), query)
    api = APIClient()
    api.force_authenticate(served.lead)
    answer = api.get(api_url(served.v2), query)

    assert page.status_code == 400
    assert page_text(page).count(f"{field}:") >= 1
    assert "<b>" not in page.content.decode()
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.get("field") == field or field in error.get("fields", {})


@pytest.mark.parametrize(
    ("query", "bucket", "points"),
    [({"days": "2"}, "hour", 49), ({}, "day", 8), ({"days": "16", "bucket": "hour"}, "hour", 385)],
)
def test_the_range_chooses_its_bucket(
    served: Served, query: dict[str, str], bucket: str, points: int
) -> None:
    page = logged_in(served.lead).get(alias_url(served.v2), query)

    assert page.status_code == 200
    requests = page_charts(page.content.decode())["production-requests-chart"]
    assert len(requests["x"]["labels"]) == points
    html = page.content.decode()
    if "bucket" in query:
        assert f'<option value="{bucket}" selected>' in html
    else:  # the automatic choice stays automatic when the days change
        assert f'<option value="" selected>{bucket} (automatic' in html


# --- charts, markers and the changes ----------------------------------------------------------


def test_the_charts_mark_the_promotion_and_the_rollback_and_the_table_lists_them(
    served: Served,
) -> None:
    rolled_back = alias_change(
        served.v1,
        user=served.lead,
        at=served.now - timedelta(minutes=30),
        kind=AliasChangeKind.ROLLBACK,
        from_version=served.v2,
        reason="errors doubled",
    )
    alias_to(served.v1)

    page = logged_in(served.lead).get(alias_url(served.v1, days=2))

    charts = page_charts(page.content.decode())
    assert set(charts) == {
        f"production-{key}-chart"
        for key in ("requests", "latency", "rates", "cost", "feedback", "outcomes")
    }
    promoted_hour = served.promoted.created_at.strftime("%Y-%m-%d %H:00")
    rollback_hour = rolled_back.created_at.strftime("%Y-%m-%d %H:00")
    for chart in charts.values():
        assert chart["markers"] == [
            {"x": promoted_hour, "label": "Promoted to v2"},
            {"x": rollback_hour, "label": "Rolled back to v1"},
        ]
        assert {promoted_hour, rollback_hour} <= set(chart["x"]["labels"])
    requests = series_points(charts["production-requests-chart"])
    counted = sum(row.counted for row in served.rows)
    assert sum(y for _, y in requests["Requests"]) == counted
    html = page.content.decode()
    assert f'id="alias-change-{served.promoted.pk}"' in html
    assert f'id="alias-change-{rolled_back.pk}"' in html and "errors doubled" in html
    assert f'id="alias-change-{served.long_ago.pk}"' not in html  # 40 days ago: out of range


def test_the_headline_is_the_whole_range(served: Served) -> None:
    page = logged_in(served.lead).get(alias_url(served.v2, days=2))

    whole = window_figures(
        registered_model=served.model,
        alias="production",
        since=served.now - timedelta(days=3),
        until=timezone.now(),
    )
    assert whole.requests > 0
    assert f'<dd id="headline-requests">{whole.requests:,}</dd>' in page.content.decode()


def test_the_api_answers_the_pages_figures(served: Served) -> None:
    api = APIClient()
    api.force_authenticate(served.lead)

    body = api.get(api_url(served.v2), {"days": "2", "bucket": "hour"}).json()

    assert (body["model_id"], body["alias"], body["serves_version"]) == (
        served.model.pk,
        "production",
        2,
    )
    assert (body["days"], body["bucket"], len(body["series"])) == (2, "hour", 49)
    counted = sum(row.counted for row in served.rows)
    assert (
        body["whole"]["requests"]
        == counted
        == sum(b["figures"]["requests"] for b in body["series"])
    )
    assert body["whole"]["errors"] == sum(
        row.counted and row.status == RequestStatus.ERROR for row in served.rows
    )
    assert list(body["whole"])[:2] == ["requests", "errors"]
    assert [change["id"] for change in body["changes"]] == [served.promoted.pk]
    change = body["changes"][0]
    assert change["kind"] == "promote" and change["changed_by"] == served.lead.username
    assert (change["from_version"]["id"], change["to_version"]["id"]) == (
        served.v1.pk,
        served.v2.pk,
    )
    assert body["series"][0]["figures"]["error_rate"] is None  # a bucket with no request


# --- drift --------------------------------------------------------------------------------------


def drift_report(
    served: Served, examples: list[dict[str, object]], **figures: dict[str, object]
) -> DriftReport:
    return DriftReport.objects.create(
        project=served.project,
        registered_model=served.model,
        alias="production",
        model_version=served.v2,
        window_start=served.now - timedelta(hours=24),
        window_end=served.now,
        reference_count=120,
        current_count=380,
        status=DriftStatus.DRIFTED,
        figures=figures,
        drifted_examples=examples,
    )


@pytest.fixture
def drifted(served: Served) -> DriftReport:
    # An older report first: only the latest is shown.
    drift_report(served, [], old={"label": "Stale figure", "drifted": True})
    newest = sorted((row for row in served.rows if row.counted), key=lambda row: row.created_at)
    examples = [
        {"request_id": newest[0].request_id, "similarity": 0.12, "text": f"strange {XSS}"},
        {"request_id": newest[1].request_id, "similarity": 0.2, "text": "odd"},
        {"request_id": "req_deleted_by_retention", "similarity": 0.3, "text": "gone"},
    ]
    return drift_report(
        served,
        examples,
        embedding_drift_auc={
            "label": f"Input drift {XSS}",
            "method": "domain classifier",
            "reference": 0.5,
            "current": 0.91234,
            "statistic": 0.91234,
            "threshold": 0.75,
            "drifted": True,
        },
        length_drift={
            "label": "Length",
            "method": "Wasserstein",
            "statistic": 0.1,
            "threshold": 1,
            "drifted": False,
        },
    )


def test_the_latest_drift_report_shows_its_figures_flagged(
    served: Served, drifted: DriftReport
) -> None:
    page = logged_in(served.lead).get(alias_url(served.v2))

    html = page.content.decode()
    assert "Stale figure" not in html
    assert 'id="drift-figure-embedding_drift_auc" class="drifted"' in html
    assert 'id="drift-figure-length_drift">' in html
    assert html.count("drift-flag") == 1
    assert "0.9123" in html and XSS not in html and XSS_ESCAPED in html


def test_the_most_drifted_requests_link_to_their_place_in_the_log(
    served: Served, drifted: DriftReport
) -> None:
    client = logged_in(served.lead)
    page = client.get(alias_url(served.v2))

    html = page.content.decode()
    first = drifted.drifted_examples[0]["request_id"]
    assert "no longer in the request log" in page_text(page)  # the deleted one
    link = next(
        part.split('"')[0]
        for part in html.split('href="')
        if part.startswith(reverse("request_logs", args=[served.project.pk]))
        and first in part.split('"')[0]
    )
    target = urlsplit(link.replace("&amp;", "&"))
    assert target.fragment == f"request-{first}"
    log_page = client.get(f"{target.path}?{target.query}").content.decode()
    # The row leads the page it links to.
    assert log_page.index('id="request-req_') == log_page.index(f'id="request-{first}"')


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.ML_LEAD, Role.ADMIN])
def test_those_who_may_send_to_review_send_the_chosen_requests(
    served: Served, drifted: DriftReport, make_member: Callable[..., User], role: Role
) -> None:
    client = logged_in(make_member(role))
    dataset = Dataset.objects.create(project=served.project, name="from production")

    page = client.get(alias_url(served.v2)).content.decode()
    assert 'id="drift-send-form"' in page and 'id="drift-send-to-review"' in page
    assert f'value="{dataset.pk}"' in page
    first, second, _ = (example["request_id"] for example in drifted.drifted_examples)
    assert f'name="request" value="{first}"' in page
    assert 'value="req_deleted_by_retention"' not in page
    action = reverse("request_logs_send", args=[served.project.pk])
    assert f'action="{action}"' in page

    sent = client.post(action, {"dataset": dataset.pk, "request": [first, second]})

    assert sent.status_code == 302
    assert Example.objects.filter(dataset=dataset).count() == 2
    assert (
        RequestLog.objects.filter(
            request_id__in=[first, second], sent_to_review__isnull=False
        ).count()
        == 2
    )
    again = client.get(alias_url(served.v2)).content.decode()
    assert f'name="request" value="{first}"' not in again and "sent to review" in again


def test_managers_see_the_drifted_requests_but_no_send_form(
    served: Served, drifted: DriftReport, make_member: Callable[..., User]
) -> None:
    page = logged_in(make_member(Role.MANAGER)).get(alias_url(served.v2)).content.decode()

    assert 'id="drifted-requests"' in page
    assert 'name="request"' not in page and 'id="drift-send-to-review"' not in page


def test_without_a_report_the_page_says_so(served: Served) -> None:
    page = logged_in(served.lead).get(alias_url(served.v2))

    assert 'id="no-drift-report"' in page.content.decode()


# --- escaping -----------------------------------------------------------------------------------


def test_hostile_model_and_alias_names_and_texts_are_escaped(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    version = served_version(project, lead, base_model, model_name=XSS)
    alias_to(version, XSS)  # the alias's name holds a "/" too
    now = timezone.now()
    alias_change(version, user=lead, at=now - timedelta(hours=1), alias=XSS, reason=XSS)
    name = alias_model_name(project, version.registered_model, XSS)
    rows_store(
        project, [Row("req_hostile", name, now - timedelta(minutes=5), "ok", 7, XSS, version.pk)]
    )
    DriftReport.objects.create(
        project=project,
        registered_model=version.registered_model,
        alias=XSS,
        window_start=now - timedelta(hours=1),
        window_end=now,
        reference_count=1,
        current_count=1,
        status=DriftStatus.STABLE,
        figures={
            XSS: {"label": XSS, "method": XSS, "reference": XSS, "current": None, "drifted": False}
        },
        drifted_examples=[{"request_id": "req_hostile", "similarity": "not a number", "text": XSS}],
    )
    client = logged_in(lead)

    overview = client.get(reverse("production_overview", args=[project.pk]))
    page = client.get(alias_url(version, XSS, days=1))

    for response in (overview, page):
        html = response.content.decode()
        assert response.status_code == 200
        assert XSS not in html and XSS_ESCAPED in html
    charts = page_charts(page.content.decode())
    assert charts["production-requests-chart"]["markers"] == [
        {"x": (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:00"), "label": "Promoted to v1"}
    ]
    assert sum(y for _, y in series_points(charts["production-requests-chart"])["Requests"]) == 1
    api = APIClient()
    api.force_authenticate(lead)
    assert api.get(api_url(version, XSS)).json()["alias"] == XSS
