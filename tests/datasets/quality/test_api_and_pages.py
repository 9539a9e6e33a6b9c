"""The quality API and pages: who may do what (status code and database unchanged), what the
pages show, and the htmx polling of a running analysis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import (
    AnalysisRun,
    AnalysisStatus,
    DatasetVersion,
    Example,
    ExampleStatus,
    Finding,
    ReviewAction,
    ReviewDecision,
)
from datasets.quality.services import analysis_run_create, analysis_run_execute
from datasets.services import dataset_version_freeze, example_review
from ftportal.models import Project
from ftportal.roles import Role

from ...api.builders import token_client
from .builders import planted_dataset

pytestmark = pytest.mark.django_db

CURATORS = {Role.REVIEWER, Role.ML_LEAD, Role.ADMIN}
HTMX = {"HTTP_HX_REQUEST": "true"}


def db_state() -> dict[str, object]:
    return {
        "runs": sorted(AnalysisRun.objects.values_list("id", "status")),
        "findings": Finding.objects.count(),
        "examples": sorted(Example.objects.values_list("id", "status", "revision")),
        "decisions": ReviewDecision.objects.count(),
        "readiness": sorted(DatasetVersion.objects.values_list("id", "readiness")),
    }


@pytest.fixture
def planted(project: Project):
    return planted_dataset(project)


@pytest.fixture
def finished_run(planted, base_model: BaseModel, make_member: Callable[..., User]) -> AnalysisRun:
    dataset, _ = planted
    run = analysis_run_create(
        dataset=dataset, base_model=base_model, user=make_member(Role.ML_LEAD)
    )
    return analysis_run_execute(run_id=run.pk)


def api(project: Project, path: str) -> str:
    return f"/api/projects/{project.pk}/{path}"


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_starting_an_analysis_through_the_api_needs_the_analyze_role(
    project, planted, base_model, make_member, role
):
    dataset, _ = planted
    client = token_client(make_member(role))
    before = db_state()
    response = client.post(
        api(project, f"datasets/{dataset.pk}/analyses/"),
        {"base_model": base_model.key},
        format="json",
    )
    if role in CURATORS:
        assert response.status_code == 201, response.content
        assert response.json()["status"] == AnalysisStatus.QUEUED
        assert AnalysisRun.objects.filter(pk=response.json()["id"], dataset=dataset).exists()
    else:
        assert response.status_code == 403
        assert db_state() == before


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_the_duplicate_bulk_fix_needs_the_review_role(project, finished_run, make_member, role):
    client = token_client(make_member(role))
    before = db_state()
    response = client.post(api(project, f"analyses/{finished_run.pk}/fix-exact-duplicates/"))
    if role in CURATORS:
        assert response.status_code == 200, response.content
        assert response.json() == {"rejected": 1}
    else:
        assert response.status_code == 403
        assert db_state() == before


def test_outsiders_get_404_and_change_nothing(project, finished_run, planted, make_member):
    other = Project.objects.create(name="other")
    outsider = token_client(make_member(Role.ADMIN, target=other))
    dataset, _ = planted
    before = db_state()
    for path in (
        f"datasets/{dataset.pk}/analyses/",
        f"analyses/{finished_run.pk}/fix-exact-duplicates/",
    ):
        assert (
            outsider.post(api(project, path), {"base_model": "x"}, format="json").status_code == 404
        )
    for path in (f"analyses/{finished_run.pk}/", f"analyses/{finished_run.pk}/findings/"):
        assert outsider.get(api(project, path)).status_code == 404
    assert db_state() == before


def test_an_unknown_base_model_is_refused_with_the_field(project, planted, make_member):
    dataset, _ = planted
    client = token_client(make_member(Role.REVIEWER))
    before = db_state()
    response = client.post(
        api(project, f"datasets/{dataset.pk}/analyses/"), {"base_model": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert "base_model" in response.content.decode()
    assert db_state() == before


def test_any_member_reads_the_analysis_and_filters_findings_by_kind(
    project, finished_run, planted, make_member
):
    _, made = planted
    client = token_client(make_member(Role.MANAGER))
    detail = client.get(api(project, f"analyses/{finished_run.pk}/")).json()
    assert detail["status"] == "succeeded"
    assert detail["stats"]["findings"]["exact_duplicate"]["examples"] == 2
    assert detail["duplicate_fix_count"] == 1
    page = client.get(api(project, f"analyses/{finished_run.pk}/findings/?kind=pii_email")).json()
    assert page["count"] == 1
    assert page["results"][0]["example"] == made["email"].pk
    assert page["results"][0]["kind"] == "pii_email"
    bad = client.get(api(project, f"analyses/{finished_run.pk}/findings/?kind=nonsense"))
    assert bad.status_code == 400


def freeze_all(dataset, user):
    for example in Example.objects.filter(dataset=dataset, status=ExampleStatus.PENDING):
        example_review(example=example, user=user, action=ReviewAction.APPROVE)
    return dataset_version_freeze(dataset=dataset, user=user)


def test_version_readiness_through_the_api_is_cached(project, planted, base_model, make_member):
    dataset, _ = planted
    version = freeze_all(dataset, make_member(Role.ML_LEAD))
    client = token_client(make_member(Role.MANAGER))
    report = client.get(api(project, f"dataset-versions/{version.pk}/readiness/")).json()
    assert report["band"] == "insufficient" and report["examples"] == version.example_count
    assert "pii_email" in report["findings"]
    assert DatasetVersion.objects.get(pk=version.pk).readiness == report


# -- pages -----------------------------------------------------------------------------------


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_quality_page_shows_stats_findings_and_links_to_the_filtered_queue(
    project, finished_run, planted, make_member
):
    dataset, _ = planted
    page = browser(make_member(Role.REVIEWER)).get(
        reverse("dataset_quality", args=[project.pk, dataset.pk])
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="token-stats"' in html and "local: no per-token price" in html
    queue = reverse("review_queue", args=[project.pk, dataset.pk])
    assert f'href="{queue}?finding=exact_duplicate&amp;status=pending"' in html
    assert 'id="fix-duplicates"' in html and "(1 example(s))" in html
    assert 'hx-trigger="every 1s"' not in html  # finished: nothing to poll


def test_managers_see_the_page_but_cannot_analyse_or_fix(
    project, finished_run, planted, base_model, make_member
):
    dataset, _ = planted
    client = browser(make_member(Role.MANAGER))
    html = client.get(reverse("dataset_quality", args=[project.pk, dataset.pk])).content.decode()
    assert 'id="start-analysis"' not in html and 'id="fix-duplicates"' not in html
    before = db_state()
    start = client.post(
        reverse("analysis_start", args=[project.pk, dataset.pk]), {"base_model": base_model.key}
    )
    fix = client.post(reverse("analysis_fix_duplicates", args=[project.pk, finished_run.pk]))
    assert (start.status_code, fix.status_code) == (403, 403)
    assert db_state() == before


def test_starting_from_the_page_polls_until_the_run_finishes(
    project, planted, base_model, make_member
):
    dataset, _ = planted
    client = browser(make_member(Role.REVIEWER))
    response = client.post(
        reverse("analysis_start", args=[project.pk, dataset.pk]),
        {"base_model": base_model.key},
        **HTMX,
    )
    assert response.status_code == 201
    run = AnalysisRun.objects.get(dataset=dataset)
    status_url = reverse("analysis_status", args=[project.pk, run.pk])
    assert f'hx-get="{status_url}"' in response.content.decode()
    assert 'hx-trigger="every 1s"' in response.content.decode()
    analysis_run_execute(run_id=run.pk)
    polled = client.get(status_url, **HTMX).content.decode()
    assert 'hx-trigger="every 1s"' not in polled and 'id="token-stats"' in polled


def test_the_fix_asks_for_confirmation_with_the_count_then_rejects(
    project, finished_run, planted, make_member
):
    dataset, made = planted
    client = browser(make_member(Role.REVIEWER))
    confirm = client.get(
        reverse("dataset_quality", args=[project.pk, dataset.pk])
        + f"?run={finished_run.pk}&confirm=fix"
    ).content.decode()
    assert "This will reject <strong>1</strong> example(s)" in confirm
    assert Example.objects.get(pk=made["dup_pending"].pk).status == ExampleStatus.PENDING
    done = client.post(
        reverse("analysis_fix_duplicates", args=[project.pk, finished_run.pk]), follow=True
    )
    assert "Rejected 1 exact duplicate(s)" in done.content.decode()
    assert Example.objects.get(pk=made["dup_pending"].pk).status == ExampleStatus.REJECTED
    again = client.post(
        reverse("analysis_fix_duplicates", args=[project.pk, finished_run.pk]), follow=True
    )
    assert "run the analysis again" in again.content.decode()


def test_the_version_page_loads_its_readiness_section(project, planted, base_model, make_member):
    dataset, _ = planted
    version = freeze_all(dataset, make_member(Role.ML_LEAD))
    client = browser(make_member(Role.REVIEWER))
    page = client.get(reverse("version_detail", args=[project.pk, version.pk])).content.decode()
    readiness_url = reverse("version_readiness", args=[project.pk, version.pk])
    assert f'hx-get="{readiness_url}"' in page
    section = client.get(readiness_url, **HTMX).content.decode()
    assert "insufficient data" in section
    assert "Validation split present" in section
    queue = reverse("review_queue", args=[project.pk, dataset.pk])
    assert f'href="{queue}?finding=pii_email&amp;status=approved"' in section
    standalone = client.get(readiness_url).content.decode()
    assert "<h1>Readiness:" in standalone and "insufficient data" in standalone


def test_the_dataset_page_links_to_quality(project, planted, make_member):
    dataset, _ = planted
    html = (
        browser(make_member(Role.MANAGER))
        .get(reverse("dataset_detail", args=[project.pk, dataset.pk]))
        .content.decode()
    )
    assert reverse("dataset_quality", args=[project.pk, dataset.pk]) in html
