"""Application keys through the page and the API, for every role: every member reads the list
(never a secret), leads and admins create (the key shown once) and revoke, the others get a 403
naming their role, an outsider a 404; key names are escaped however odd they are."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ftportal.models import Project
from ftportal.roles import Role
from serving.models import ApplicationKey
from serving.services import application_key_authenticate, application_key_create
from tests.api.builders import token_client
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

pytestmark = pytest.mark.django_db

MANAGERS_OF_KEYS = [Role.ML_LEAD, Role.ADMIN]
READERS_ONLY = [Role.REVIEWER, Role.MANAGER]
KEY_IN_PAGE = re.compile(
    r'<code id="created-key-value">(ftp_[0-9a-f]{12}\.[A-Za-z0-9_-]{43})</code>'
)


@pytest.fixture
def existing_key(project: Project, make_member: Callable[..., User]) -> ApplicationKey:
    return application_key_create(
        project=project, user=make_member(Role.ADMIN), name="existing"
    ).key


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def keys_page(project: Project) -> str:
    return reverse("app_keys", args=[project.pk])


def keys_api(project: Project, tail: str = "") -> str:
    return f"/api/projects/{project.pk}/app-keys/{tail}"


def key_rows() -> list[tuple[str, object]]:
    return sorted(ApplicationKey.objects.values_list("name", "revoked_at"))


# --- the page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_reads_the_list_without_any_secret(
    project: Project, make_member: Callable[..., User], existing_key: ApplicationKey, role: Role
) -> None:
    response = logged_in(make_member(role)).get(keys_page(project))

    assert response.status_code == 200
    html = response.content.decode()
    assert "existing" in html and f"{existing_key.prefix}…" in html
    assert existing_key.secret_sha256 not in html
    may_manage = role in MANAGERS_OF_KEYS
    assert ('id="create-app-key-form"' in html) is may_manage
    assert (f'id="revoke-app-key-{existing_key.pk}"' in html) is may_manage


@pytest.mark.parametrize("role", list(Role))
def test_the_project_page_links_to_the_keys(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    html = logged_in(make_member(role)).get(reverse("project_detail", args=[project.pk]))
    assert f'href="{keys_page(project)}" id="app-keys-link"' in html.content.decode()


@pytest.mark.parametrize("role", MANAGERS_OF_KEYS)
def test_a_lead_or_admin_creates_a_key_and_sees_it_once(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    client = logged_in(make_member(role))

    response = client.post(
        keys_page(project), {"name": "support bot", "rate_limit_per_minute": "120"}
    )

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    shown = KEY_IN_PAGE.search(response.content.decode())
    assert shown, response.content.decode()
    key = application_key_authenticate(shown.group(1), project=project)
    assert (key.name, key.rate_limit_per_minute) == ("support bot", 120)
    # Never again: the list shows the prefix only.
    again = client.get(keys_page(project)).content.decode()
    assert shown.group(1) not in again
    assert key.prefix in again


def test_a_key_created_on_the_page_may_expire(
    project: Project, make_member: Callable[..., User]
) -> None:
    client = logged_in(make_member(Role.ML_LEAD))
    response = client.post(keys_page(project), {"name": "temp", "expires_at": "2099-01-31T18:00"})
    assert response.status_code == 200
    expiry = ApplicationKey.objects.get().expires_at
    assert expiry is not None and expiry.isoformat() == "2099-01-31T18:00:00+00:00"


@pytest.mark.parametrize(
    ("form", "status", "field"),
    [
        ({"name": ""}, 400, "name"),
        ({"name": "x" * 101}, 400, "name"),
        ({"name": "ok", "rate_limit_per_minute": "0"}, 400, "rate_limit_per_minute"),
        ({"name": "ok", "rate_limit_per_minute": "lots"}, 400, "rate_limit_per_minute"),
        ({"name": "ok", "rate_limit_per_minute": "²"}, 400, "rate_limit_per_minute"),
        ({"name": "ok", "expires_at": "tomorrow"}, 400, "expires_at"),
        ({"name": "ok", "expires_at": "2020-01-01T00:00"}, 400, "expires_at"),
        ({"name": "ok", "expires_at": "2020-13-45T99:00"}, 400, "expires_at"),
        ({"name": "existing"}, 409, "name"),
    ],
)
def test_bad_input_on_the_page_is_refused_naming_the_field_and_keeps_the_form(
    project: Project,
    make_member: Callable[..., User],
    existing_key: ApplicationKey,
    form: dict[str, str],
    status: int,
    field: str,
) -> None:
    before = key_rows()
    response = logged_in(make_member(Role.ML_LEAD)).post(keys_page(project), form)

    assert response.status_code == status
    text = page_text(response)
    assert f"{field}:" in text
    assert 'id="created-key"' not in response.content.decode()
    assert key_rows() == before


@pytest.mark.parametrize("role", MANAGERS_OF_KEYS)
def test_a_lead_or_admin_revokes_a_key_and_it_stops_working_at_once(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    user = make_member(role)
    created = application_key_create(project=project, user=user, name="app")
    client = logged_in(user)

    response = client.post(reverse("app_key_revoke", args=[project.pk, created.key.pk]))

    assert response.status_code == 302
    assert response["Location"] == keys_page(project)
    page = page_text(client.get(keys_page(project)))
    assert f"Revoked app ({created.key.prefix}…)" in page
    assert "revoked" in page
    with pytest.raises(Exception, match="revoked"):
        application_key_authenticate(created.plaintext, project=project)


@pytest.mark.parametrize("role", READERS_ONLY)
def test_a_reviewer_or_manager_cannot_create_or_revoke_on_the_page(
    project: Project, make_member: Callable[..., User], existing_key: ApplicationKey, role: Role
) -> None:
    client = logged_in(make_member(role))
    before = key_rows()

    created = client.post(keys_page(project), {"name": "mine"})
    revoked = client.post(reverse("app_key_revoke", args=[project.pk, existing_key.pk]))

    for response in (created, revoked):
        assert response.status_code == 403
        text = page_text(response)
        assert f"Your role '{role.value}' in project 'Ticket triage'" in text
        assert "does not allow you to create or revoke application keys" in text
    assert key_rows() == before


def test_an_outsider_gets_404_for_the_page_and_every_action(
    project: Project, existing_key: ApplicationKey
) -> None:
    client = logged_in(User.objects.create_user(username="stranger", password="pw"))
    before = key_rows()

    responses = [
        client.get(keys_page(project)),
        client.post(keys_page(project), {"name": "mine"}),
        client.post(reverse("app_key_revoke", args=[project.pk, existing_key.pk])),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404]
    assert all("Ticket triage" not in page_text(r) for r in responses)
    assert key_rows() == before


def test_a_lead_cannot_revoke_another_projects_key_by_its_id(
    project: Project, make_member: Callable[..., User]
) -> None:
    other = Project.objects.create(name="Other")
    theirs = application_key_create(
        project=other, user=make_member(Role.ADMIN, target=other), name="theirs"
    ).key
    client = logged_in(make_member(Role.ML_LEAD))

    response = client.post(reverse("app_key_revoke", args=[project.pk, theirs.pk]))

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_an_anonymous_visitor_is_sent_to_the_login_page(project: Project) -> None:
    response = Client().get(keys_page(project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_revoking_needs_the_csrf_token(project: Project, make_member: Callable[..., User]) -> None:
    user = make_member(Role.ADMIN)
    key = application_key_create(project=project, user=user, name="app").key
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    page = client.get(keys_page(project)).content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    refused = client.post(reverse("app_key_revoke", args=[project.pk, key.pk]))

    assert refused.status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


@pytest.mark.parametrize(
    "name",
    [
        XSS,
        '"><img src=x onerror=alert(1)>',
        "{{ 7|add:7 }} {% now 'Y' %}",
        "клиент ☎ 🚀 العربية",
        "x" * 100,
    ],
)
def test_key_names_are_escaped_and_shown_as_given(
    project: Project, make_member: Callable[..., User], name: str
) -> None:
    client = logged_in(make_member(Role.ADMIN))

    created = client.post(keys_page(project), {"name": name})
    listed = client.get(keys_page(project))

    assert created.status_code == 200
    for response in (created, listed):
        html = response.content.decode()
        assert XSS not in html and "<img src=x" not in html
        cell = re.search(r'<td class="app-key-name">(.*?)</td>', html)
        assert cell and unescape(cell.group(1)) == name
    if name == XSS:
        assert XSS_ESCAPED in listed.content.decode()


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_lists_keys_in_the_one_list_shape_without_secrets(
    project: Project, make_member: Callable[..., User], existing_key: ApplicationKey, role: Role
) -> None:
    response = token_client(make_member(role)).get(keys_api(project))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1
    (item,) = body["results"]
    assert item["prefix"] == existing_key.prefix and item["name"] == "existing"
    assert "key" not in item and "secret_sha256" not in item
    detail = token_client(make_member(role)).get(keys_api(project, f"{existing_key.pk}/"))
    assert detail.status_code == 200 and detail.json() == item


@pytest.mark.parametrize("role", MANAGERS_OF_KEYS)
def test_a_lead_or_admin_creates_and_revokes_through_the_api(
    project: Project, make_member: Callable[..., User], role: Role
) -> None:
    client = token_client(make_member(role))

    created = client.post(
        keys_api(project),
        {"name": "batch", "rate_limit_per_minute": 5, "expires_at": "2099-01-01T00:00:00Z"},
        format="json",
    )

    assert created.status_code == 201, created.content
    assert created["Cache-Control"] == "no-store"
    body = created.json()
    assert body["rate_limit_per_minute"] == 5 and body["expires_at"].startswith("2099-01-01")
    key = application_key_authenticate(body["key"], project=project)
    assert key.pk == body["id"]
    listed = client.get(keys_api(project)).json()["results"]
    assert body["key"] not in str(listed)

    revoked = client.post(keys_api(project, f"{key.pk}/revoke/"), format="json")

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    with pytest.raises(Exception, match="revoked"):
        application_key_authenticate(body["key"], project=project)


@pytest.mark.parametrize("role", READERS_ONLY)
def test_a_reviewer_or_manager_gets_403_creating_or_revoking_through_the_api(
    project: Project, make_member: Callable[..., User], existing_key: ApplicationKey, role: Role
) -> None:
    client = token_client(make_member(role))
    before = key_rows()

    created = client.post(keys_api(project), {"name": "mine"}, format="json")
    revoked = client.post(keys_api(project, f"{existing_key.pk}/revoke/"), format="json")

    for response in (created, revoked):
        assert response.status_code == 403
        assert role.value in response.json()["error"]["message"]
    assert key_rows() == before


def test_an_outsider_gets_404_from_every_key_operation(
    project: Project, existing_key: ApplicationKey
) -> None:
    client = token_client(User.objects.create_user(username="stranger", password="pw"))
    before = key_rows()

    responses = [
        client.get(keys_api(project)),
        client.get(keys_api(project, f"{existing_key.pk}/")),
        client.post(keys_api(project), {"name": "mine"}, format="json"),
        client.post(keys_api(project, f"{existing_key.pk}/revoke/"), format="json"),
    ]

    assert [r.status_code for r in responses] == [404] * 4
    assert key_rows() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"name": "ok", "expires_at": "soon"}, "expires_at"),
        ({"name": "ok", "secret": "mine"}, "secret"),
    ],
)
def test_bad_input_through_the_api_is_a_400_naming_the_field(
    project: Project, make_member: Callable[..., User], body: dict[str, object], field: str
) -> None:
    response = token_client(make_member(Role.ML_LEAD)).post(keys_api(project), body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not ApplicationKey.objects.exists()


def test_a_past_expiry_through_the_api_is_a_400_naming_it(
    project: Project, make_member: Callable[..., User]
) -> None:
    response = token_client(make_member(Role.ML_LEAD)).post(
        keys_api(project), {"name": "ok", "expires_at": "2020-01-01T00:00:00Z"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "expires_at"


def test_revoking_takes_no_body_and_another_projects_key_is_404(
    project: Project, make_member: Callable[..., User], existing_key: ApplicationKey
) -> None:
    client = token_client(make_member(Role.ML_LEAD))
    other = Project.objects.create(name="Other")
    theirs = application_key_create(
        project=other, user=make_member(Role.ADMIN, target=other), name="theirs"
    ).key

    with_body = client.post(
        keys_api(project, f"{existing_key.pk}/revoke/"), {"now": True}, format="json"
    )
    cross = client.post(keys_api(project, f"{theirs.pk}/revoke/"), format="json")

    assert with_body.status_code == 400
    assert cross.status_code == 404
    assert not ApplicationKey.objects.filter(revoked_at__isnull=False).exists()


# --- /admin/ ------------------------------------------------------------------------------------


def test_a_site_admin_sees_keys_without_their_hash_and_revokes_them(
    project: Project, existing_key: ApplicationKey
) -> None:
    superuser = User.objects.create_superuser(username="root", password="pw")
    client = logged_in(superuser)

    listing = client.get("/admin/serving/applicationkey/")
    detail = client.get(f"/admin/serving/applicationkey/{existing_key.pk}/change/")
    revoked = client.post(
        "/admin/serving/applicationkey/",
        {"action": "revoke", "_selected_action": [existing_key.pk]},
    )

    assert listing.status_code == 200 and existing_key.prefix in listing.content.decode()
    assert detail.status_code == 200
    assert existing_key.secret_sha256 not in detail.content.decode()
    assert revoked.status_code == 302
    existing_key.refresh_from_db()
    assert existing_key.revoked_at is not None and existing_key.revoked_by == superuser
