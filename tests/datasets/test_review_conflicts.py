"""Two reviewers saving the same example at once: the second is told, nothing is overwritten."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, Example, ExampleStatus, ReviewAction, ReviewDecision
from datasets.services import example_review
from ftportal.errors import ConflictError
from ftportal.roles import Role
from tests.factories import TICKETS, chat

pytestmark = pytest.mark.django_db


@pytest.fixture
def example(project):
    dataset = Dataset.objects.create(project=project, name="tickets")
    return Example.objects.create(dataset=dataset, messages=chat(*TICKETS[0]))


def test_a_decision_on_a_stale_revision_is_refused_with_the_other_change(example, make_member):
    first, second = make_member(Role.REVIEWER), make_member(Role.REVIEWER)
    seen = example.revision
    example_review(
        example=example,
        user=first,
        action=ReviewAction.EDIT,
        new_answer="first's fix",
        expected_revision=seen,
    )
    with pytest.raises(ConflictError) as conflict:
        example_review(
            example=example,
            user=second,
            action=ReviewAction.EDIT,
            new_answer="second's fix",
            expected_revision=seen,
        )
    assert first.username in conflict.value.message
    assert conflict.value.extra["current_answer"] == "first's fix"
    example.refresh_from_db()
    assert example.messages[-1]["content"] == "first's fix"
    assert ReviewDecision.objects.count() == 1


def test_the_review_page_shows_the_conflict_and_the_current_answer(example, make_member):
    first, second = Client(), Client()
    first.force_login(make_member(Role.REVIEWER))
    second.force_login(make_member(Role.REVIEWER))
    url = reverse("review_decide", args=[example.dataset.project_id, example.pk])
    form = {"action": "edit", "answer": "first's fix", "revision": example.revision}
    assert first.post(url, form, headers={"HX-Request": "true"}).status_code == 200
    stale = {"action": "reject", "revision": form["revision"]}
    response = second.post(url, stale, headers={"HX-Request": "true"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "nothing was saved" in html and "first&#x27;s fix" in html
    example.refresh_from_db()
    assert example.status == ExampleStatus.APPROVED


def test_the_api_answers_409_for_a_stale_revision(example, make_member):
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("api:example_review", args=[example.dataset.project_id, example.pk])
    assert client.post(url, {"action": "approve", "revision": 0}).status_code == 200
    response = client.post(url, {"action": "reject", "revision": 0})
    assert response.status_code == 409
    assert response.json()["error"]["current_status"] == ExampleStatus.APPROVED
    assert client.post(url, {"action": "reject", "revision": 1}).status_code == 200


def test_an_api_decision_without_the_revision_is_refused_and_overwrites_nothing(
    example, make_member
):
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("api:example_review", args=[example.dataset.project_id, example.pk])
    before = example.messages

    response = client.post(
        url, {"action": "edit", "answer": "blind overwrite"}, content_type="application/json"
    )

    assert response.status_code == 400
    assert "revision" in response.json()["error"]["fields"]
    example.refresh_from_db()
    assert (example.status, example.messages) == (ExampleStatus.PENDING, before)
    assert not ReviewDecision.objects.exists()


def test_a_page_decision_without_the_revision_is_refused_and_overwrites_nothing(
    example, make_member
):
    client = Client()
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("review_decide", args=[example.dataset.project_id, example.pk])

    response = client.post(
        url, {"action": "edit", "answer": "blind overwrite"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 400
    assert "revision: the example revision this decision was made on is required" in (
        response.content.decode()
    )
    example.refresh_from_db()
    assert example.status == ExampleStatus.PENDING
    assert not ReviewDecision.objects.exists()
