from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, ReviewAction
from datasets.selectors import version_diff
from datasets.services import dataset_version_freeze, example_review
from ftportal.roles import Role
from tests.factories import approved_examples

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(project, make_member):
    lead = make_member(Role.ML_LEAD)
    dataset = Dataset.objects.create(project=project, name="tickets")
    examples = approved_examples(dataset, 10)
    v1 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    example_review(example=examples[0], user=lead, action=ReviewAction.REJECT)
    example_review(example=examples[1], user=lead, action=ReviewAction.EDIT, new_answer="fixed")
    [added] = approved_examples(dataset, 1)
    v2 = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    return lead, v1, v2, examples, added


def test_the_diff_names_added_removed_and_changed_examples(two_versions):
    _, v1, v2, examples, added = two_versions
    diff = version_diff(v1, v2)
    assert [item.example_id for item in diff.added] == [added.pk]
    assert [item.example_id for item in diff.removed] == [examples[0].pk]
    [change] = diff.changed
    assert change.after.example_id == examples[1].pk
    assert change.before.messages[-1]["content"] != "fixed"
    assert change.after.messages[-1]["content"] == "fixed"
    assert diff.unchanged == 8


def test_the_compare_page_and_the_version_changelog_show_the_diff(client: Client, two_versions):
    lead, v1, v2, _, _ = two_versions
    client.force_login(lead)
    project_id = v2.dataset.project_id
    page = client.get(reverse("version_detail", args=[project_id, v2.pk])).content.decode()
    assert "since v1: 1 added, 1 removed, 1 changed, 8 unchanged" in page
    compare = client.get(reverse("version_compare", args=[project_id, v2.pk]))
    assert compare.status_code == 200
    assert "fixed" in compare.content.decode()


def test_the_diff_api_compares_against_a_chosen_version(client: Client, two_versions):
    lead, v1, v2, _, added = two_versions
    client.force_login(lead)
    url = reverse("api:dataset_version_diff", args=[v2.dataset.project_id, v2.pk])
    body = client.get(url, {"against": v1.pk}).json()
    assert body["summary"] == "1 added, 1 removed, 1 changed, 8 unchanged"
    assert [item["example"] for item in body["added"]] == [added.pk]
    # Checked like every query input: a 400 whose fields name the parameter.
    refused = client.get(url, {"against": "x"})
    assert refused.status_code == 400
    assert list(refused.json()["error"]["fields"]) == ["against"]


def test_a_manager_of_another_project_cannot_read_the_diff(
    client: Client, two_versions, make_member
):
    from ftportal.models import Project

    other = Project.objects.create(name="other")
    outsider = make_member(Role.MANAGER, target=other)
    client.force_login(outsider)
    _, v1, v2, _, _ = two_versions
    url = reverse("api:dataset_version_diff", args=[v2.dataset.project_id, v2.pk])
    assert client.get(url).status_code == 404
