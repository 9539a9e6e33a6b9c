"""Guessing passwords is limited on both ways in: after AXES_FAILURE_LIMIT failures for one
account from one address, even the right password is refused with a reason and a 429 until the
cool-off passes; other accounts are unaffected. The token endpoint also limits failures per
account from any address and per address across accounts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import F
from django.test import Client
from rest_framework.test import APIClient

from ftportal.signin import FailedSignInsPerAccount, FailedSignInsPerClient

LOCKED = "Too many failed sign-ins for this account; try again in 15 minutes."
TOKEN_URL = "/api/auth/token/"


@pytest.fixture
def address() -> Iterator[str]:
    """A client address of this test's own, so the per-address counts of other tests (and of
    other runs sharing the cache) do not leak in; its cache entries are removed afterwards."""
    ip = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    yield ip
    cache.delete(FailedSignInsPerClient.cache_key_for(ip))


@pytest.fixture
def alice(db: None) -> Iterator[User]:
    user = User.objects.create_user(username=f"alice-{secrets.token_hex(4)}", password="right-pw")
    yield user
    cache.delete(FailedSignInsPerAccount.cache_key_for(user.username))


@pytest.fixture
def bob(db: None) -> Iterator[User]:
    user = User.objects.create_user(username=f"bob-{secrets.token_hex(4)}", password="bob-pw")
    yield user
    cache.delete(FailedSignInsPerAccount.cache_key_for(user.username))


def move_clock_past_cooloff() -> None:
    """What 16 minutes of waiting does to axes' record: every failure is older than the cool-off."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))


# --- the login page -------------------------------------------------------------------------


def page_login(client: Client, username: str, password: str) -> Any:
    return client.post("/login/", {"username": username, "password": password})


def test_the_login_page_refuses_even_the_right_password_after_five_failures(
    alice: User, bob: User, address: str
) -> None:
    client = Client(REMOTE_ADDR=address)
    for _ in range(4):
        assert page_login(client, alice.username, "wrong").status_code == 200  # the form again
    fifth = page_login(client, alice.username, "wrong")
    assert fifth.status_code == 429

    right = page_login(client, alice.username, "right-pw")

    assert right.status_code == 429
    assert right["Retry-After"] == str(15 * 60)
    assert LOCKED in right.content.decode()
    assert "_auth_user_id" not in client.session
    # Another account from the same address signs in.
    other = Client(REMOTE_ADDR=address)
    assert page_login(other, bob.username, "bob-pw").status_code == 302
    # The same account from another address signs in: the lock is per account and address.
    elsewhere = Client(REMOTE_ADDR="192.0.2.77")
    assert page_login(elsewhere, alice.username, "right-pw").status_code == 302


def test_the_login_page_signs_in_again_after_the_cooloff(alice: User, address: str) -> None:
    client = Client(REMOTE_ADDR=address)
    for _ in range(5):
        page_login(client, alice.username, "wrong")
    assert page_login(client, alice.username, "right-pw").status_code == 429

    move_clock_past_cooloff()

    response = page_login(client, alice.username, "right-pw")
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


# --- the token endpoint ---------------------------------------------------------------------


def token_login(client: APIClient, username: str, password: str) -> Any:
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json")


def test_the_token_endpoint_refuses_the_right_password_after_five_failures_with_a_429(
    alice: User, bob: User, address: str
) -> None:
    client = APIClient(REMOTE_ADDR=address)
    for _ in range(4):
        assert token_login(client, alice.username, "wrong").status_code == 400
    assert token_login(client, alice.username, "wrong").status_code == 429

    right = token_login(client, alice.username, "right-pw")

    assert right.status_code == 429
    assert right["Retry-After"] == str(15 * 60)
    assert right.json() == {"error": {"message": LOCKED}}
    assert token_login(APIClient(REMOTE_ADDR=address), bob.username, "bob-pw").status_code == 200

    move_clock_past_cooloff()

    again = token_login(client, alice.username, "right-pw")
    assert again.status_code == 200
    assert again.json()["token"]


def test_the_page_and_the_api_share_one_count(alice: User, address: str) -> None:
    """Alternating between the two ways in does not double the guesses."""
    for attempt in range(5):
        if attempt % 2:
            page_login(Client(REMOTE_ADDR=address), alice.username, "wrong")
        else:
            token_login(APIClient(REMOTE_ADDR=address), alice.username, "wrong")
    assert page_login(Client(REMOTE_ADDR=address), alice.username, "right-pw").status_code == 429
    assert token_login(APIClient(REMOTE_ADDR=address), alice.username, "right-pw").status_code == (
        429
    )


def test_failures_for_one_account_from_many_addresses_are_throttled(alice: User, settings) -> None:
    settings.FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT = 3
    for n in range(3):
        client = APIClient(REMOTE_ADDR=f"198.51.100.{n + 1}")
        assert token_login(client, alice.username, "wrong").status_code == 400

    fourth = token_login(APIClient(REMOTE_ADDR="198.51.100.9"), alice.username, "right-pw")

    assert fourth.status_code == 429
    assert int(fourth["Retry-After"]) > 14 * 60
    assert fourth.json()["error"]["message"] == LOCKED


def test_failures_from_one_address_across_accounts_are_throttled(
    alice: User, bob: User, address: str, settings
) -> None:
    settings.FTPORTAL_TOKEN_FAILURES_PER_CLIENT = 3
    client = APIClient(REMOTE_ADDR=address)
    for n in range(3):
        assert token_login(client, f"nobody-{n}", "guess").status_code == 400

    refused = token_login(client, bob.username, "bob-pw")

    assert refused.status_code == 429
    assert refused["Retry-After"]
    assert refused.json()["error"]["message"] == (
        "Too many failed sign-ins from your address; try again in 15 minutes."
    )
    # Another client signs bob in.
    assert token_login(APIClient(REMOTE_ADDR="192.0.2.5"), bob.username, "bob-pw").status_code == (
        200
    )


def test_successful_sign_ins_are_not_counted(alice: User, address: str, settings) -> None:
    settings.FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT = 2
    settings.FTPORTAL_TOKEN_FAILURES_PER_CLIENT = 2
    client = APIClient(REMOTE_ADDR=address)
    for _ in range(5):
        assert token_login(client, alice.username, "right-pw").status_code == 200
