"""Admission at the gateway's chat path (``serving.admission``): a key admitted once is kept in
the gateway's process and admitted again in one Redis round trip, yet a revocation, an expiry
or any change announced by another process refuses it at its next request, and no request is
counted twice. Also the chat path's own HTTP answers (it is a plain ASGI application): 405,
413, the HTTPS redirect, and the embedded default without Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import openai
import pytest
import redis
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from fakes.chat_servers import (
    FakeOpenAIChatServer,
    fake_openai_chat_fixture,  # noqa: F401
)
from ftportal.models import Project
from serving import admission, gateway, generations
from serving.models import ApplicationKey
from serving.services import application_key_create, application_key_revoke

from .gateway_server import fake_chat_key, running_gateway  # noqa: F401
from .test_gateway import QUESTION, client, hosted_version, promote

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
MODEL = "Ticket triage/production"


@pytest.fixture
def served(project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer) -> Iterator[str]:
    """The gateway's origin, with the project's production alias serving a hosted version."""
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    with running_gateway() as origin:
        yield origin


def ask(origin: str, key: str) -> str:
    answer = client(origin, key).chat.completions.create(model=MODEL, messages=QUESTION)
    return answer.choices[0].message.content or ""


def another_process_announces_a_change() -> None:
    """What ``keys_changed`` does in another gateway process, seen from this one: the token in
    Redis is replaced, and this process's kept keys are left as they are."""
    url = str(settings.CACHES["default"]["LOCATION"])
    redis.Redis.from_url(url).set(generations.cache_key(generations.KEYS), f"t{time.time()}")


def revoke_without_announcing(key: ApplicationKey) -> None:
    # As another process's commit looks from here: the row changed, nothing said in-process.
    ApplicationKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())


def test_a_key_revoked_by_another_process_is_refused_once_the_change_is_announced(
    served: str, project: Project, lead: User
) -> None:
    created = application_key_create(project=project, user=lead, name="bot")
    assert ask(served, created.plaintext)  # read from Postgres, then kept

    revoke_without_announcing(created.key)
    # Kept, and nothing announced: the kept key is what admits it (no row was read).
    assert ask(served, created.plaintext)

    another_process_announces_a_change()
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(served, created.plaintext)
    assert "revoked" in refused.value.message


def test_a_key_revoked_through_the_service_is_refused_at_its_next_request(
    served: str, project: Project, lead: User
) -> None:
    created = application_key_create(project=project, user=lead, name="bot")
    assert ask(served, created.plaintext)
    assert ask(served, created.plaintext)  # admitted as kept

    application_key_revoke(key=created.key, user=lead)
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(served, created.plaintext)
    assert "revoked" in refused.value.message


def test_a_kept_key_is_refused_once_it_expires(served: str, project: Project, lead: User) -> None:
    expires_at = timezone.now() + timedelta(seconds=4)
    created = application_key_create(project=project, user=lead, name="bot", expires_at=expires_at)
    assert ask(served, created.plaintext)
    assert ask(served, created.plaintext)

    time.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()) + 0.2)
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(served, created.plaintext)
    assert "expired" in refused.value.message


def test_a_request_that_finds_its_kept_key_changed_is_counted_once(
    served: str, project: Project, lead: User, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    def minute() -> int:
        return int(time.time() // 60)

    # Three requests within a limit of three, one of them after a change was announced (the
    # kept key is read again, and that request must not be counted on both paths); the fourth
    # is over the limit. A run that straddles a clock minute proves nothing and is tried again.
    for attempt in range(3):
        created = application_key_create(
            project=project, user=lead, name=f"bot {attempt}", rate_limit_per_minute=3
        )
        window = minute()
        ask(served, created.plaintext)
        another_process_announces_a_change()
        ask(served, created.plaintext)
        ask(served, created.plaintext)
        try:
            ask(served, created.plaintext)
        except openai.RateLimitError:
            if minute() == window:
                return
            continue  # the minute turned: the fourth may rightly have been refused or not
        assert minute() != window, "a fourth request within a limit of three was served"
    pytest.fail("three tries each straddled a clock minute's end")


def test_a_kept_key_records_its_use_once_a_minute(
    served: str, project: Project, lead: User
) -> None:
    created = application_key_create(project=project, user=lead, name="bot")
    ask(served, created.plaintext)
    [kept] = admission._kept.values()
    assert kept.key.pk == created.key.pk
    long_ago = timezone.now() - timedelta(minutes=5)
    ApplicationKey.objects.filter(pk=created.key.pk).update(last_used_at=long_ago)
    kept.key.last_used_at = long_ago  # as if this process had admitted it five minutes ago

    before = timezone.now()
    ask(served, created.plaintext)  # admitted as kept: its use is written in the background
    deadline = time.monotonic() + 10
    while ApplicationKey.objects.get(pk=created.key.pk).last_used_at == long_ago:
        assert time.monotonic() < deadline, "the kept key's use was never written"
        time.sleep(0.05)
    written = ApplicationKey.objects.get(pk=created.key.pk).last_used_at
    assert written is not None and written >= before - timedelta(seconds=1)


def test_the_chat_path_answers_a_wrong_method_and_a_large_body_in_openais_shape(
    served: str, project: Project, lead: User, settings: object
) -> None:
    key = application_key_create(project=project, user=lead, name="bot").plaintext
    wrong = requests.get(f"{served}/v1/chat/completions", timeout=30)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # type: ignore[attr-defined]
    large = requests.post(
        f"{served}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 2000}]},
        timeout=30,
    )
    assert large.status_code == 413
    assert large.json()["error"]["code"] == "request_too_large"


def test_the_chat_path_redirects_plain_http_when_the_site_requires_https(
    served: str, project: Project, lead: User, settings: object
) -> None:
    key = application_key_create(project=project, user=lead, name="bot").plaintext
    settings.SECURE_SSL_REDIRECT = True  # type: ignore[attr-defined]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # type: ignore[attr-defined]
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "where is my invoice"}]}
    )
    headers = {
        "Authorization": f"Bearer {key}",
        "Host": "gateway.example",
        "Content-Type": "application/json",
    }

    plain = requests.post(
        f"{served}/v1/chat/completions",
        data=body,
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )
    assert plain.status_code == 301
    assert plain.headers["Location"] == "https://gateway.example/v1/chat/completions"

    behind_tls = requests.post(
        f"{served}/v1/chat/completions",
        data=body,
        headers={**headers, "X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=30,
    )
    assert behind_tls.status_code == 200


def test_without_redis_every_request_is_admitted_from_postgres(
    served: str, project: Project, lead: User, settings: object
) -> None:
    settings.CACHES = {  # type: ignore[attr-defined]
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    admission._kept.clear()
    created = application_key_create(project=project, user=lead, name="bot")
    assert ask(served, created.plaintext)
    assert ask(served, created.plaintext)
    assert admission._kept == {}  # nothing could say when it changed: nothing kept

    revoke_without_announcing(created.key)
    with pytest.raises(openai.AuthenticationError):
        ask(served, created.plaintext)


def test_a_bug_on_the_chat_path_is_openais_500_and_logged(
    served: str, project: Project, lead: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = application_key_create(project=project, user=lead, name="bot").plaintext

    def broken(raw: bytes) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway, "_chat_request", broken)
    with pytest.raises(openai.InternalServerError) as failed:
        ask(served, key)
    assert failed.value.status_code == 500
    assert failed.value.code == "internal_error"
    assert "a bug" not in failed.value.message  # the traceback goes to the log, not the caller
