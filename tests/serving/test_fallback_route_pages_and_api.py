"""Fallback routes through the page and the API, for every role: every member reads each
alias's route and its last 24 hours from the request log; leads and admins set, change and
remove one; reviewers and managers get a 403, an outsider a 404. A target must be another
version of the alias's own model or an offered catalog base model; anything else is a 400
naming the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import Alias, ModelVersion
from serving.models import FallbackCause, FallbackRoute, RequestLog, RequestStatus
from tests.api.builders import World, register_model_version, token_client, world_fallback_route
from tests.api.fixtures import api_world_fixture  # noqa: F401
from tests.factories import frozen_version
from tests.pages.builders import XSS, XSS_ESCAPED

pytestmark = pytest.mark.django_db

MANAGERS_OF_ROUTES = [Role.ML_LEAD, Role.ADMIN]
READERS_ONLY = [Role.REVIEWER, Role.MANAGER]


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def production(world: World) -> Alias:
    return Alias.objects.get(registered_model=world.registered_model, name="production")


def routes_page(project: Project) -> str:
    return reverse("fallback_routes", args=[project.pk])


def routes_api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/fallback-routes/{tail}"


def form(alias: Alias, target: str, **numbers: str) -> dict[str, str]:
    return {
        "alias": str(alias.pk),
        "target": target,
        "timeout_seconds": numbers.get("timeout_seconds", "2.5"),
        "failures_to_open": numbers.get("failures_to_open", "3"),
        "cooldown_seconds": numbers.get("cooldown_seconds", "45"),
        "enabled": "on",
    }


def log_row(
    route: FallbackRoute, status: str, cause: str, *, age: timedelta = timedelta(0)
) -> None:
    RequestLog.objects.create(
        project=route.alias.registered_model.project,
        request_id=f"req_{RequestLog.objects.count():032x}",
        requested_model="Ticket triage/production",
        messages=[],
        status=status,
        latency_ms=1,
        fallback_route=route,
        fallback_cause=cause,
        created_at=timezone.now() - age,
    )


def other_models_version(world: World) -> ModelVersion:
    return register_model_version(
        version=world.version, base_model=world.first.base_model, user=world.owner, model_name="x"
    )


def other_projects_version(world: World) -> ModelVersion:
    other = Project.objects.create(name="Other team")
    return register_model_version(
        version=frozen_version(other, world.owner),
        base_model=world.first.base_model,
        user=world.owner,
        model_name="hidden",
    )


# --- the page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_reads_the_routes_and_their_fallbacks_from_the_log(
    world: World, make_member: Callable[..., User], role: Role
) -> None:
    route = world_fallback_route(world)
    log_row(route, RequestStatus.FALLBACK, FallbackCause.ERROR)
    log_row(route, RequestStatus.FALLBACK, FallbackCause.CIRCUIT_OPEN)
    log_row(route, RequestStatus.ERROR, FallbackCause.ERROR)
    log_row(route, RequestStatus.FALLBACK, FallbackCause.ERROR, age=timedelta(hours=25))

    response = logged_in(make_member(role)).get(routes_page(world.project))

    assert response.status_code == 200
    html = response.content.decode()
    assert "triage/production" in html and "v1" in html
    assert "2\n          (1 with the breaker open)" in html  # the old row is out of the window
    assert "1 failed on the route too" in html
    may_manage = role in MANAGERS_OF_ROUTES
    assert (f'id="remove-route-{route.pk}"' in html) is may_manage
    assert (f'id="set-route-{route.alias_id}"' in html) is may_manage


@pytest.mark.parametrize("role", list(Role))
def test_the_project_page_links_to_the_routes(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    html = logged_in(make_member(role)).get(reverse("project_detail", args=[project.pk]))
    assert f'href="{routes_page(project)}" id="fallback-routes-link"' in html.content.decode()


@pytest.mark.parametrize("role", MANAGERS_OF_ROUTES)
def test_a_lead_or_admin_sets_changes_and_removes_a_route_on_the_page(
    world: World, make_member: Callable[..., User], base_model: BaseModel, role: Role
) -> None:
    browser = logged_in(make_member(role))
    alias = production(world)

    response = browser.post(routes_page(world.project), form(alias, f"version:{world.first.pk}"))

    assert response.status_code == 302
    route = FallbackRoute.objects.get(alias=alias)
    assert route.fallback_version == world.first and route.fallback_base_model is None
    assert (route.timeout_seconds, route.failures_to_open, route.cooldown_seconds) == (2.5, 3, 45)
    assert route.enabled

    changed = form(alias, f"base:{base_model.key}", timeout_seconds="9")
    del changed["enabled"]
    assert browser.post(routes_page(world.project), changed).status_code == 302
    route.refresh_from_db()
    assert route.fallback_version is None and route.fallback_base_model == base_model
    assert route.timeout_seconds == 9 and not route.enabled

    remove = reverse("fallback_route_remove", args=[world.project.pk, route.pk])
    # A link or an image (GET) removes nothing: only the page's form does.
    assert browser.get(remove).status_code == 405
    assert FallbackRoute.objects.filter(pk=route.pk).exists()
    assert browser.post(remove).status_code == 302
    assert not FallbackRoute.objects.exists()


@pytest.mark.parametrize(
    ("target", "numbers", "field"),
    [
        ("version:{second}", {}, "fallback_version"),  # what the alias serves now
        ("version:{other_model}", {}, "fallback_version"),
        ("version:{other_project}", {}, "target"),  # not even nameable from here
        ("base:no-such-model", {}, "target"),
        ("version:{first}", {"timeout_seconds": "0"}, "timeout_seconds"),
        ("version:{first}", {"timeout_seconds": "nan"}, "timeout_seconds"),
        ("version:{first}", {"failures_to_open": "2.5"}, "failures_to_open"),
        ("version:{first}", {"cooldown_seconds": "1e9"}, "cooldown_seconds"),
    ],
)
def test_bad_input_on_the_page_is_refused_naming_the_field(
    world: World,
    make_member: Callable[..., User],
    target: str,
    numbers: dict[str, str],
    field: str,
) -> None:
    ids = {
        "first": world.first.pk,
        "second": world.second.pk,
        "other_model": other_models_version(world).pk,
        "other_project": other_projects_version(world).pk,
    }

    response = logged_in(make_member(Role.ML_LEAD)).post(
        routes_page(world.project), form(production(world), target.format(**ids), **numbers)
    )

    assert response.status_code == 400
    assert f"{field}:" in response.content.decode()
    assert not FallbackRoute.objects.exists()


@pytest.mark.parametrize("role", READERS_ONLY)
def test_a_reviewer_or_manager_cannot_set_or_remove_a_route_on_the_page(
    world: World, make_member: Callable[..., User], role: Role
) -> None:
    route = world_fallback_route(world)
    browser = logged_in(make_member(role))
    alias = production(world)

    assert browser.post(routes_page(world.project), form(alias, "base:x")).status_code == 403
    remove = reverse("fallback_route_remove", args=[world.project.pk, route.pk])
    assert browser.post(remove).status_code == 403
    assert FallbackRoute.objects.get().fallback_version == world.first


def test_an_outsider_gets_404_for_the_page_and_its_actions(
    world: World, make_member: Callable[..., User]
) -> None:
    route = world_fallback_route(world)
    elsewhere = Project.objects.create(name="Elsewhere")
    browser = logged_in(make_member(Role.ADMIN, target=elsewhere))

    assert browser.get(routes_page(world.project)).status_code == 404
    remove = reverse("fallback_route_remove", args=[world.project.pk, route.pk])
    assert browser.post(remove).status_code == 404
    assert FallbackRoute.objects.exists()


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_lists_routes_in_the_one_page_shape_with_their_count(
    world: World, make_member: Callable[..., User], role: Role
) -> None:
    route = world_fallback_route(world)
    log_row(route, RequestStatus.FALLBACK, FallbackCause.TIMEOUT)

    body = token_client(make_member(role)).get(routes_api(world.project)).json()

    assert body["count"] == 1
    [listed] = body["results"]
    assert listed["id"] == route.pk and listed["alias"] == "production"
    assert listed["model"] == world.registered_model.pk and listed["serves_now"] == 2
    assert listed["fallback_version"] == world.first.pk
    assert listed["fallback_version_number"] == 1 and listed["fallback_base_model"] is None
    assert listed["fallbacks_last_24h"] == 1


@pytest.mark.parametrize("role", MANAGERS_OF_ROUTES)
def test_a_lead_or_admin_creates_changes_and_removes_through_the_api(
    world: World, make_member: Callable[..., User], base_model: BaseModel, role: Role
) -> None:
    api = token_client(make_member(role))
    body = {"model": world.registered_model.pk, "alias": "production"}

    created = api.post(
        routes_api(world.project),
        {**body, "fallback_version": world.first.pk, "timeout_seconds": 4},
        format="json",
    )

    assert created.status_code == 201, created.content
    route_id = created.json()["id"]
    assert created.json()["timeout_seconds"] == 4 and created.json()["failures_to_open"] == 5
    again = api.post(
        routes_api(world.project), {**body, "fallback_version": world.first.pk}, format="json"
    )
    assert again.status_code == 409 and again.json()["error"]["field"] == "alias"

    # Sending the other target replaces the target; what is not sent stays.
    changed = api.patch(
        routes_api(world.project, f"{route_id}/"),
        {"fallback_base_model": base_model.key, "enabled": False},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["fallback_version"] is None
    assert changed.json()["fallback_base_model"] == base_model.key
    assert changed.json()["timeout_seconds"] == 4 and changed.json()["enabled"] is False

    assert api.delete(routes_api(world.project, f"{route_id}/")).status_code == 204
    assert not FallbackRoute.objects.exists()


@pytest.mark.parametrize("role", READERS_ONLY)
def test_a_reviewer_or_manager_gets_403_writing_routes_through_the_api(
    world: World, make_member: Callable[..., User], role: Role
) -> None:
    route = world_fallback_route(world)
    api = token_client(make_member(role))

    assert api.get(routes_api(world.project, f"{route.pk}/")).status_code == 200
    created = api.post(
        routes_api(world.project),
        {"model": world.registered_model.pk, "alias": "staging", "fallback_version": 1},
        format="json",
    )
    assert created.status_code == 403
    patch = api.patch(routes_api(world.project, f"{route.pk}/"), {"enabled": False}, format="json")
    assert patch.status_code == 403
    assert api.delete(routes_api(world.project, f"{route.pk}/")).status_code == 403
    assert FallbackRoute.objects.get().enabled


def test_an_outsider_gets_404_from_every_route_operation(
    world: World, make_member: Callable[..., User]
) -> None:
    route = world_fallback_route(world)
    elsewhere = Project.objects.create(name="Elsewhere")
    api = token_client(make_member(Role.ADMIN, target=elsewhere))

    assert api.get(routes_api(world.project)).status_code == 404
    assert api.get(routes_api(world.project, f"{route.pk}/")).status_code == 404
    assert api.delete(routes_api(world.project, f"{route.pk}/")).status_code == 404
    # Nor can a lead of another project reach this one's route through their own project.
    assert api.delete(routes_api(elsewhere, f"{route.pk}/")).status_code == 404
    assert FallbackRoute.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fallback_version": "{second}"}, "fallback_version"),
        ({"fallback_version": "{other_model}"}, "fallback_version"),
        ({"fallback_version": "{other_project}"}, "fallback_version"),
        ({"fallback_base_model": "no-such-model"}, "fallback_base_model"),
        ({}, "fallback_version"),  # no target
        ({"fallback_version": "{first}", "fallback_base_model": "{base}"}, "fallback_version"),
        ({"fallback_version": "{first}", "alias": "staging"}, "alias"),
        ({"fallback_version": "{first}", "timeout_seconds": 0}, "timeout_seconds"),
        ({"fallback_version": "{first}", "failures_to_open": 0}, "failures_to_open"),
    ],
)
def test_bad_input_through_the_api_is_a_400_naming_the_field(
    world: World,
    make_member: Callable[..., User],
    base_model: BaseModel,
    changes: dict[str, object],
    field: str,
) -> None:
    ids = {
        "first": world.first.pk,
        "second": world.second.pk,
        "other_model": other_models_version(world).pk,
        "other_project": other_projects_version(world).pk,
        "base": base_model.key,
    }
    body: dict[str, object] = {"model": world.registered_model.pk, "alias": "production"}
    for name, value in changes.items():
        filled = value.format(**ids) if isinstance(value, str) else value
        body[name] = (
            int(filled) if name == "fallback_version" and isinstance(filled, str) else filled
        )

    response = token_client(make_member(Role.ML_LEAD)).post(
        routes_api(world.project), body, format="json"
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error.get("fields", {}) or error.get("field") == field
    assert not FallbackRoute.objects.exists()


def test_the_request_log_shows_why_a_request_fell_back_and_what_answered(
    world: World, make_member: Callable[..., User], base_model: BaseModel
) -> None:
    route = world_fallback_route(world)
    log_row(route, RequestStatus.FALLBACK, FallbackCause.TIMEOUT)
    RequestLog.objects.update(
        served_base_model=base_model, fallback_reason=f"no answer within 2s {XSS}"
    )

    html = (
        logged_in(make_member(Role.MANAGER))
        .get(reverse("request_logs", args=[world.project.pk]), {"status": "fallback"})
        .content.decode()
    )

    assert "primary timed out:" in html and f"no answer within 2s {XSS_ESCAPED}" in html
    assert XSS not in html
    assert f"{base_model.key} (base model)" in html
