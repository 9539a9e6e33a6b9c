"""A dataset's quality target, the score a model must reach to be good enough at all: set and
cleared by whoever sets the answer contract (ML leads and admins), on the dataset page and
through the API, from above 0 to 1, any other value refused naming the field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

SETTERS = {Role.ML_LEAD, Role.ADMIN}


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="intents")


def api(project: Project, dataset: Dataset) -> str:
    return f"/api/projects/{project.pk}/datasets/{dataset.pk}/quality-target/"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_lead_sets_reads_and_clears_the_target_through_the_api(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    lead = token_client(make_member(Role.ML_LEAD))
    saved = lead.post(api(project, dataset), {"quality_target": 0.8}, format="json")
    assert saved.status_code == 200 and saved.json() == {"quality_target": 0.8}
    dataset.refresh_from_db()
    assert dataset.quality_target == 0.8

    reader = token_client(make_member(Role.MANAGER))
    assert reader.get(api(project, dataset)).json() == {"quality_target": 0.8}
    detail = reader.get(f"/api/projects/{project.pk}/datasets/{dataset.pk}/").json()
    assert detail["quality_target"] == 0.8

    top = lead.post(api(project, dataset), {"quality_target": 1}, format="json")
    assert top.json() == {"quality_target": 1.0}
    cleared = lead.post(api(project, dataset), {"quality_target": None}, format="json")
    assert cleared.status_code == 200 and cleared.json() == {"quality_target": None}
    dataset.refresh_from_db()
    assert dataset.quality_target is None


@pytest.mark.parametrize("value", [0, -0.5, 1.2, 80, "NaN", "Infinity", "lots", True, [0.8]])
def test_a_target_outside_zero_to_one_is_a_400_naming_the_field_and_keeps_the_old_one(
    project: Project, dataset: Dataset, make_member: Callable[..., User], value: object
) -> None:
    Dataset.objects.filter(pk=dataset.pk).update(quality_target=0.7)
    response = token_client(make_member(Role.ML_LEAD)).post(
        api(project, dataset), {"quality_target": value}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    # Not a number: the input's own check, per field; a number out of range: the service's.
    assert error.get("field") == "quality_target" or list(error["fields"]) == ["quality_target"]
    assert "quality_target" in str(error)
    dataset.refresh_from_db()
    assert dataset.quality_target == 0.7


def test_an_unknown_key_is_refused(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    response = token_client(make_member(Role.ML_LEAD)).post(
        api(project, dataset), {"quality_target": 0.8, "target": 0.9}, format="json"
    )
    assert response.status_code == 400
    dataset.refresh_from_db()
    assert dataset.quality_target is None


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
def test_only_leads_and_admins_set_the_target_on_the_page_and_through_the_api(
    project: Project, dataset: Dataset, make_member: Callable[..., User], role: Role
) -> None:
    user = make_member(role)
    through_api = token_client(user).post(
        api(project, dataset), {"quality_target": 0.8}, format="json"
    )
    on_page = logged_in(user).post(
        reverse("dataset_quality_target", args=[project.pk, dataset.pk]),
        {"quality_target": "0.9"},
    )
    dataset.refresh_from_db()
    if role in SETTERS:
        assert through_api.status_code == 200 and on_page.status_code == 302
        assert dataset.quality_target == 0.9
    else:
        assert through_api.status_code == 403 and on_page.status_code == 403
        assert dataset.quality_target is None


def test_another_projects_member_cannot_see_or_set_it(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    outsider = make_member(Role.ADMIN, target=Project.objects.create(name="other"))
    client = token_client(outsider)
    assert client.get(api(project, dataset)).status_code == 404
    assert (
        client.post(api(project, dataset), {"quality_target": 0.5}, format="json").status_code
        == 404
    )


def test_the_dataset_page_shows_the_target_and_the_form_only_to_setters(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    lead = logged_in(make_member(Role.ML_LEAD))
    url = reverse("dataset_quality_target", args=[project.pk, dataset.pk])
    page_url = reverse("dataset_detail", args=[project.pk, dataset.pk])

    bad = lead.post(url, {"quality_target": "eighty"})
    assert bad.status_code == 400
    body = bad.content.decode()
    assert (
        'id="quality-target-error"' in body
        and "quality_target: &#x27;eighty&#x27; is not a number" in body
    )
    assert 'value="eighty"' in body  # shown again as typed
    out_of_range = lead.post(url, {"quality_target": "80"})
    assert out_of_range.status_code == 400
    assert "quality_target: a score above 0 and at most 1" in out_of_range.content.decode()

    saved = lead.post(url, {"quality_target": " 0.85 "}, follow=True)
    html = saved.content.decode()
    assert "Quality target saved: 0.85 (85 %)." in html
    assert "<strong>85.0 %</strong>" in html and 'value="0.85"' in html

    manager = logged_in(make_member(Role.MANAGER)).get(page_url).content.decode()
    assert "<strong>85.0 %</strong>" in manager and 'id="quality-target-form"' not in manager

    cleared = lead.post(url, {"quality_target": ""}, follow=True).content.decode()
    assert "Quality target cleared." in cleared and "No target:" in cleared
    dataset.refresh_from_db()
    assert dataset.quality_target is None
