"""Promote and rollback carry the production version the user saw: two people (or one
double click) acting on the same page move production once; the other gets a 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import BaseModel
from ftportal.errors import ConflictError
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import AliasChange, AliasChangeKind, ModelVersion
from registry.selectors import production_version
from registry.services import model_version_promote, production_rollback
from tests.concurrency import at_once
from tests.factories import finished_evaluation, frozen_version, production_number
from tests.registry.test_services import promote_as_better, register


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def three_promotions(project: Project, lead: User, base_model: BaseModel) -> list[ModelVersion]:
    """v1, v2 and v3 promoted in turn: production serves v3 and a rollback goes to v2."""
    data = frozen_version(project, lead)
    versions = [register(project, lead, base_model, data) for _ in range(3)]
    for version in versions:
        promote_as_better(version, lead)
    return versions


def rollbacks(registered_model_id: int) -> int:
    return AliasChange.objects.filter(
        registered_model_id=registered_model_id, kind=AliasChangeKind.ROLLBACK
    ).count()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_api_rollbacks_move_production_once_and_the_second_gets_a_409(
    project: Project, lead: User, make_member: Callable[[Role], User], base_model: BaseModel
) -> None:
    v1, v2, v3 = three_promotions(project, lead, base_model)
    other_lead = make_member(Role.ML_LEAD)
    url = f"/api/projects/{project.pk}/models/{v1.registered_model_id}/rollback/"
    # Both saw production at v3 with a rollback to v2, as two open registry pages would.
    body = {"reason": "complaints", "expected_current_version": 3, "target_version": 2}

    def roll_back(user: User) -> Callable[[], tuple[int, dict[str, Any]]]:
        def call() -> tuple[int, dict[str, Any]]:
            client = APIClient()
            client.force_authenticate(user)
            response = client.post(url, body, format="json")
            return response.status_code, response.json()

        return call

    answers = at_once([roll_back(lead), roll_back(other_lead)])

    assert sorted(status for status, _ in answers) == [200, 409]
    refusal = next(body for status, body in answers if status == 409)["error"]
    assert refusal["message"].startswith("Production moved to v2 since you loaded the page")
    assert refusal["field"] == "expected_current_version"
    assert production_version(v1.registered_model) == v2
    assert rollbacks(v1.registered_model_id) == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_rollbacks_through_the_service_change_the_alias_history_once(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    v1, v2, _ = three_promotions(project, lead, base_model)

    def roll_back() -> str:
        try:
            production_rollback(
                registered_model=v1.registered_model,
                user=lead,
                reason="drift",
                expected_current_version=3,
                target_version=2,
            )
        except ConflictError as refused:
            return f"{refused.status_code}"
        return "moved"

    outcomes = at_once([roll_back, roll_back])

    assert sorted(outcomes) == ["409", "moved"]
    assert production_version(v1.registered_model) == v2
    assert list(
        AliasChange.objects.filter(registered_model=v1.registered_model)
        .order_by("id")
        .values_list("kind", "from_version__number", "to_version__number")
    ) == [("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2)]


@pytest.mark.django_db
def test_a_rollback_form_posted_twice_rolls_back_once(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    v1, v2, _ = three_promotions(project, lead, base_model)
    client.force_login(lead)
    registry = client.get(reverse("model_list", args=[project.pk])).content.decode()
    assert 'name="expected_current_version" value="3"' in registry
    assert 'name="target_version" value="2"' in registry
    form = {"reason": "double click", "expected_current_version": "3", "target_version": "2"}
    url = reverse("model_rollback", args=[project.pk, v1.registered_model_id])

    first = client.post(url, form)
    second = client.post(url, form)

    assert first.status_code == 302
    assert second.status_code == 409
    assert "Production moved to v2 since you loaded the page" in second.content.decode()
    assert production_version(v1.registered_model) == v2
    assert rollbacks(v1.registered_model_id) == 1


@pytest.mark.django_db
def test_a_promotion_form_posted_twice_promotes_once_and_the_second_post_says_why(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    data = frozen_version(project, lead)
    v1, v2 = (register(project, lead, base_model, data) for _ in range(2))
    promote_as_better(v1, lead)
    finished_evaluation(
        version=v2, against=v1, scores=[1.0] * 10, baseline_scores=[0.0] * 10, user=lead
    )
    client.force_login(lead)
    url = reverse("version_promote", args=[project.pk, v2.pk])
    page = client.get(url).content.decode()
    assert 'name="expected_current_version" value="1"' in page

    first = client.post(url, {"reason": "better", "expected_current_version": "1"})
    second = client.post(url, {"reason": "better", "expected_current_version": "1"})

    assert first.status_code == 302
    assert second.status_code == 409
    assert "Production moved to v2 since you loaded the page" in second.content.decode()
    assert AliasChange.objects.filter(kind=AliasChangeKind.PROMOTE).count() == 2


@pytest.mark.django_db
def test_a_first_promotion_expects_none_and_a_rollback_to_a_target_that_moved_is_refused(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    data = frozen_version(project, lead)
    v1, v2 = (register(project, lead, base_model, data) for _ in range(2))
    finished_evaluation(
        version=v1, against=None, scores=[1.0] * 10, baseline_scores=[0.0] * 10, user=lead
    )
    with pytest.raises(ConflictError) as stale:
        model_version_promote(
            model_version=v1, user=lead, reason="first", expected_current_version=2
        )
    assert stale.value.message.startswith("Production moved to nothing since you loaded")
    model_version_promote(
        model_version=v1, user=lead, reason="first", expected_current_version=None
    )
    promote_as_better(v2, lead)
    assert production_number(v1.registered_model) == 2

    with pytest.raises(ConflictError) as moved_target:
        production_rollback(
            registered_model=v1.registered_model,
            user=lead,
            reason="drift",
            expected_current_version=2,
            target_version=3,
        )

    assert moved_target.value.extra == {"field": "target_version", "target_version": 1}
    assert production_version(v1.registered_model) == v2
