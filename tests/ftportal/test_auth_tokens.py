"""API tokens are stored hashed, expire, can be revoked with DELETE /api/auth/token/, and are
revoked by a password change (not by logging out of the site); removing a membership ends the
access of the same token and the same session on their very next request."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from ftportal.models import ApiToken, Membership, Project
from ftportal.roles import Role
from ftportal.services import member_remove
from ftportal.tokens import api_token_create

TOKEN_URL = "/api/auth/token/"


def with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def new_key(user: User) -> str:
    response = APIClient().post(
        TOKEN_URL, {"username": user.username, "password": "pw"}, format="json"
    )
    assert response.status_code == 200, response.content
    key: str = response.json()["token"]
    return key


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def test_the_key_is_shown_once_and_stored_only_as_a_hash(lead: User) -> None:
    before = timezone.now()
    response = APIClient().post(
        TOKEN_URL, {"username": lead.username, "password": "pw"}, format="json"
    )

    key = response.json()["token"]
    token = ApiToken.objects.get(user=lead)
    prefix, secret = key.split(".")
    assert token.prefix == prefix
    assert token.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in ApiToken.objects.filter(pk=token.pk).values().get().values()]
    assert not any(secret in value for value in stored)
    expires = datetime.fromisoformat(response.json()["expires_at"])
    assert timedelta(days=30) <= expires - before <= timedelta(days=30, minutes=1)
    assert token.expires_at == expires
    # Each request creates a new token; the earlier one keeps working.
    assert new_key(lead) != key
    assert with_key(key).get("/api/projects/").status_code == 200


def test_a_wrong_secret_with_a_real_prefix_is_refused(lead: User) -> None:
    _, key = api_token_create(user=lead)
    prefix = key.split(".")[0]
    assert with_key(f"{prefix}.not-the-secret").get("/api/projects/").status_code == 401
    assert with_key(prefix).get("/api/projects/").status_code == 401


def test_a_token_records_when_it_was_last_used(lead: User) -> None:
    token, key = api_token_create(user=lead)
    assert token.last_used_at is None
    with_key(key).get("/api/projects/")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_an_expired_token_is_refused_with_the_reason(lead: User) -> None:
    token, key = api_token_create(user=lead)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = with_key(key).get("/api/projects/")

    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_delete_revokes_the_presented_token_and_only_that_one(lead: User) -> None:
    key = new_key(lead)
    other = new_key(lead)

    response = with_key(key).delete(TOKEN_URL)

    assert response.status_code == 204
    refused = with_key(key).get("/api/projects/")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert with_key(other).get("/api/projects/").status_code == 200
    assert ApiToken.objects.get(prefix=key.split(".")[0]).revoked_at is not None
    # A revoked token cannot revoke itself again.
    assert with_key(key).delete(TOKEN_URL).status_code == 401


def test_delete_without_a_token_says_what_it_revokes(lead: User) -> None:
    client = APIClient()
    client.force_login(lead)
    response = client.delete(TOKEN_URL)
    assert response.status_code == 400
    assert "Authorization header" in response.json()["error"]["message"]
    assert APIClient().delete(TOKEN_URL).status_code == 401


def test_a_stale_token_header_does_not_stop_creating_a_new_token(lead: User) -> None:
    key = new_key(lead)
    with_key(key).delete(TOKEN_URL)
    response = with_key(key).post(
        TOKEN_URL, {"username": lead.username, "password": "pw"}, format="json"
    )
    assert response.status_code == 200


def test_logging_out_of_the_site_leaves_api_tokens_working(lead: User) -> None:
    """Decided: a browser's log out ends that session; scripts' tokens are separate."""
    key = new_key(lead)
    browser = Client()
    browser.force_login(lead)
    browser.post("/logout/")
    assert with_key(key).get("/api/projects/").status_code == 200


def test_changing_the_password_revokes_every_token_and_keeps_this_session(
    lead: User, project: Project
) -> None:
    keys = [new_key(lead), new_key(lead)]
    browser = Client()
    browser.force_login(lead)
    other_browser = Client()
    other_browser.force_login(lead)
    page = browser.get("/password/")
    assert page.status_code == 200
    assert "revokes all your API tokens" in page.content.decode()
    assert 'href="/password/"' in browser.get("/").content.decode()  # linked from the nav

    response = browser.post(
        "/password/",
        {
            "old_password": "pw",
            "new_password1": "a-new-passphrase-42",
            "new_password2": "a-new-passphrase-42",
        },
    )

    assert response.status_code == 302 and response["Location"] == "/password/done/"
    for key in keys:
        assert with_key(key).get("/api/projects/").status_code == 401
    assert browser.get(f"/projects/{project.pk}/").status_code == 200
    assert other_browser.get(f"/projects/{project.pk}/").status_code == 302  # to the login page
    lead.refresh_from_db()
    assert lead.check_password("a-new-passphrase-42")


def test_a_wrong_current_password_changes_nothing(lead: User) -> None:
    key = new_key(lead)
    browser = Client()
    browser.force_login(lead)
    response = browser.post(
        "/password/",
        {"old_password": "nope", "new_password1": "x-new-pass-9", "new_password2": "x-new-pass-9"},
    )
    assert response.status_code == 200
    assert "old password was entered incorrectly" in response.content.decode()
    assert with_key(key).get("/api/projects/").status_code == 200


def test_removing_a_membership_ends_the_same_tokens_and_sessions_access_at_once(
    project: Project, make_member: Callable[[Role], User]
) -> None:
    reviewer = make_member(Role.REVIEWER)
    admin = make_member(Role.ADMIN)
    api = with_key(new_key(reviewer))
    browser = Client()
    browser.force_login(reviewer)
    assert api.get(f"/api/projects/{project.pk}/").status_code == 200
    assert browser.get(f"/projects/{project.pk}/").status_code == 200

    member_remove(membership=Membership.objects.get(user=reviewer), actor=admin)

    assert api.get(f"/api/projects/{project.pk}/").status_code == 404
    assert api.get(f"/api/projects/{project.pk}/datasets/").status_code == 404
    assert browser.get(f"/projects/{project.pk}/").status_code == 404
