"""Secrets leave a worker only for the endpoint an admin registered them for (issue 13, item 1).

The attack from the issue, through the real API, against a local listener that records every
request's headers: a lead who names a URL or a worker variable is refused, and the listener
hears nothing. A registered endpoint receives its own secret and nobody else receives anything;
the secret never shows up in an API answer, a page or a log record, failures included.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Endpoint, EndpointKind
from catalog.services import endpoint_register
from datasets.models import DatasetVersion
from evaluation.models import EvalRun, EvalStatus
from evaluation.runner import eval_run_execute
from fakes.chat_servers import FakeAnthropicServer, FakeOpenAIChatServer
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.evaluation.test_runs import held_out_version

pytestmark = pytest.mark.django_db

SECRET_ENV = "FTPORTAL_TEST_ENDPOINT_KEY"
SECRET = "sk-endpoint-secret-4f0c9a7e2b"


@pytest.fixture(autouse=True)
def endpoint_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def listener() -> Iterator[FakeOpenAIChatServer]:
    """Stands in for the attacker's server: answers like OpenAI, records every header."""
    with FakeOpenAIChatServer(api_key="anything") as server:
        yield server


@pytest.fixture
def home() -> Iterator[FakeOpenAIChatServer]:
    """The registered endpoint's server; it accepts only the endpoint's secret."""
    with FakeOpenAIChatServer(api_key=SECRET) as server:
        yield server


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return held_out_version(project, lead)


def evaluations(project: Project) -> str:
    return f"/api/projects/{project.pk}/evaluations/"


def hosted(endpoint: str, **more: object) -> dict[str, object]:
    return {"kind": "openai_compatible", "api_model": "gpt-4o-mini", "endpoint": endpoint, **more}


def execute_every_queued_run() -> list[EvalRun]:
    """What a worker would do with whatever the API queued (dispatch waits for a commit that
    never comes in these tests, so this process is the worker)."""
    finished = []
    for run_id in EvalRun.objects.filter(status=EvalStatus.QUEUED).values_list("pk", flat=True):
        run = eval_run_execute(run_id=run_id)
        assert run is not None
        finished.append(run)
    return finished


def test_the_attack_from_the_issue_is_refused_and_the_listener_hears_nothing(
    project: Project, lead: User, version: DatasetVersion, listener: FakeOpenAIChatServer
) -> None:
    client = token_client(lead)
    attacker = listener.base_url  # http://127.0.0.1:<port>/v1
    candidate = {"kind": "openai_compatible", "api_model": "gpt-4o-mini"}
    attempts: list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]] = [
        # A worker variable of the lead's choosing, sent to the lead's URL.
        (
            {"candidates": [{**candidate, "api_base_url": attacker, "api_key_env": "HOME"}]},
            lambda fields: fields["candidates"]["0"]["api_key_env"],
        ),
        (
            {
                "candidates": [
                    {**candidate, "api_base_url": attacker, "api_key_env": "DJANGO_SETTINGS_MODULE"}
                ]
            },
            lambda fields: fields["candidates"]["0"]["api_base_url"],
        ),
        # The key field left empty: the provider's own key, sent to the lead's URL.
        (
            {"candidates": [{**candidate, "api_base_url": attacker}]},
            lambda fields: fields["candidates"]["0"]["api_base_url"],
        ),
        # A judge naming a variable and a URL, beside honest candidates.
        (
            {
                "candidates": [hosted("openai"), hosted("openai", label="other")],
                "judge": {
                    "kind": "openai_compatible",
                    "model": "gpt-4o-mini",
                    "base_url": attacker,
                    "key_env": "HOME",
                },
            },
            lambda fields: fields["judge"]["key_env"],
        ),
    ]

    for body, field_error in attempts:
        response = client.post(
            evaluations(project),
            {"dataset_version": version.pk, "split": "all", **body},
            format="json",
        )
        assert response.status_code == 400, response.content
        [message] = field_error(response.json()["error"]["fields"])
        assert "no longer accepted" in message and "registered endpoint" in message

    execute_every_queued_run()
    assert listener.headers_seen == []
    assert not EvalRun.objects.exists()


def test_a_registered_endpoint_receives_its_own_secret_and_nothing_else_does(
    project: Project,
    lead: User,
    version: DatasetVersion,
    home: FakeOpenAIChatServer,
    listener: FakeOpenAIChatServer,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The provider default ("openai" endpoint) now leads to the listener: nobody names it, so
    # it must hear nothing, and the OPENAI_API_KEY it would carry must go nowhere.
    settings.OPENAI_BASE_URL = listener.base_url
    endpoint_register(
        name="home",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url=home.base_url,
        secret_env=SECRET_ENV,
        models=["gpt-4o-mini"],
    )
    with FakeAnthropicServer(api_key=SECRET) as judge_server:
        endpoint_register(
            name="home-judge",
            kind=EndpointKind.ANTHROPIC,
            base_url=judge_server.base_url,
            secret_env=SECRET_ENV,
        )
        client = token_client(lead)
        created = client.post(
            evaluations(project),
            {
                "dataset_version": version.pk,
                "split": "all",
                "candidates": [hosted("home"), hosted("home", user_template="Say: {input}")],
                "judge": {
                    "kind": "anthropic",
                    "model": "claude-haiku-4-5",
                    "endpoint": "home-judge",
                },
            },
            format="json",
        )
        assert created.status_code == 201, created.content
        caplog.set_level(logging.DEBUG)
        [run] = execute_every_queued_run()
        judge_headers = judge_server.headers_seen

    assert run.status == EvalStatus.SUCCEEDED, run.error
    assert len(home.headers_seen) == 2 * 6
    assert {h["authorization"] for h in home.headers_seen} == {f"Bearer {SECRET}"}
    assert judge_headers and all(
        SECRET in (h.get("x-api-key", ""), h.get("authorization", "").removeprefix("Bearer "))
        for h in judge_headers
    )
    assert listener.headers_seen == []
    assert_never_shown(SECRET, project, lead, run, caplog)


def test_failures_name_the_variable_never_its_value(
    project: Project,
    lead: User,
    version: DatasetVersion,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = token_client(lead)
    # A server that refuses the key (401 on every item): the provider's error is stored.
    with FakeOpenAIChatServer(api_key="sk-not-this-one") as refusing:
        endpoint_register(
            name="refusing",
            kind=EndpointKind.OPENAI_COMPATIBLE,
            base_url=refusing.base_url,
            secret_env=SECRET_ENV,
        )
        body = {"dataset_version": version.pk, "split": "all", "candidates": [hosted("refusing")]}
        assert client.post(evaluations(project), body, format="json").status_code == 201
        [refused] = execute_every_queued_run()
        assert refusing.headers_seen  # it was called, with the secret, and said no
    assert refused.status == EvalStatus.FAILED
    assert_never_shown(SECRET, project, lead, refused, caplog)

    # The variable unset on this worker: the error names it, and nothing is sent.
    with FakeOpenAIChatServer(api_key=SECRET) as server:
        endpoint_register(
            name="unset",
            kind=EndpointKind.OPENAI_COMPATIBLE,
            base_url=server.base_url,
            secret_env=SECRET_ENV,
        )
        body["candidates"] = [hosted("unset")]
        assert client.post(evaluations(project), body, format="json").status_code == 201
        monkeypatch.delenv(SECRET_ENV)
        [unset] = execute_every_queued_run()
        assert server.headers_seen == []
    assert unset.status == EvalStatus.FAILED
    assert f"the variable {SECRET_ENV} is not set on this worker" in unset.error


def assert_never_shown(
    secret: str, project: Project, lead: User, run: EvalRun, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in the run's stored errors, any API answer or page about it, or any log record."""
    run.refresh_from_db()
    assert secret not in run.error
    for candidate in run.candidates.all():
        assert not candidate.results.filter(error__contains=secret).exists()
    client = token_client(lead)
    for path in ("", f"{run.pk}/", f"{run.pk}/results/"):
        response = client.get(f"{evaluations(project)}{path}")
        assert response.status_code == 200
        assert secret not in response.content.decode()
    endpoints = client.get(f"/api/projects/{project.pk}/endpoints/")
    assert secret not in endpoints.content.decode()
    browser = Client()
    browser.force_login(lead)
    for page in (
        reverse("eval_detail", args=[project.pk, run.pk]),
        reverse("eval_new", args=[project.pk]),
    ):
        shown = browser.get(page)
        assert shown.status_code == 200
        assert secret not in shown.content.decode()
    assert caplog.records, "the run logged nothing at all: the check would be empty"
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in str(record.args)


def test_a_host_outside_the_allow_list_is_refused_at_save_and_by_the_worker(
    project: Project,
    lead: User,
    version: DatasetVersion,
    home: FakeOpenAIChatServer,
    settings: Any,
) -> None:
    registered_earlier = endpoint_register(
        name="home",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url=home.base_url,
        secret_env=SECRET_ENV,
    )
    client = token_client(lead)
    body = {"dataset_version": version.pk, "split": "all", "candidates": [hosted("home")]}
    assert client.post(evaluations(project), body, format="json").status_code == 201

    settings.FTPORTAL_ENDPOINT_HOSTS = frozenset({"llm.internal.example"})

    with pytest.raises(ValidationError) as refused:
        endpoint_register(
            name="elsewhere",
            kind=EndpointKind.OPENAI_COMPATIBLE,
            base_url=home.base_url,
            secret_env=SECRET_ENV,
        )
    assert "FTPORTAL_ENDPOINT_HOSTS" in refused.value.message_dict["base_url"][0]
    # An endpoint saved before the list: new evaluations refuse it, and so does the worker.
    response = client.post(evaluations(project), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "candidates[0].endpoint"
    [run] = execute_every_queued_run()
    assert run.status == EvalStatus.FAILED
    assert "127.0.0.1 is not in FTPORTAL_ENDPOINT_HOSTS" in run.error
    assert home.headers_seen == []

    settings.FTPORTAL_ENDPOINT_HOSTS = frozenset({"127.0.0.1"})
    registered_earlier.full_clean()  # listed: fine again


@pytest.mark.parametrize(
    ("candidate", "field", "says"),
    [
        (hosted("nowhere"), "candidates[0].endpoint", "No endpoint 'nowhere'"),
        (hosted("off"), "candidates[0].endpoint", "disabled"),
        (hosted("narrow", api_model="gpt-4o"), "candidates[0].api_model", "serves only"),
        ({**hosted("narrow"), "kind": "anthropic"}, "candidates[0].endpoint", "not the"),
        ({"kind": "openai_compatible", "api_model": "gpt-4o-mini"}, "candidates[0].endpoint", ""),
    ],
)
def test_a_candidate_must_name_an_enabled_endpoint_that_serves_its_model(
    project: Project,
    lead: User,
    version: DatasetVersion,
    candidate: dict[str, object],
    field: str,
    says: str,
) -> None:
    endpoint_register(
        name="off", kind=EndpointKind.OPENAI, secret_env="OPENAI_API_KEY", enabled=False
    )
    endpoint_register(
        name="narrow", kind=EndpointKind.OPENAI, secret_env="OPENAI_API_KEY", models=["gpt-4o-mini"]
    )
    response = token_client(lead).post(
        evaluations(project),
        {"dataset_version": version.pk, "split": "all", "candidates": [candidate]},
        format="json",
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert field in text and says in text
    assert not EvalRun.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"secret_env": "DJANGO_SECRET_KEY"}, "secret_env"),
        ({"secret_env": "not a name"}, "secret_env"),
        ({"kind": EndpointKind.OPENAI, "secret_env": ""}, "secret_env"),
        ({"base_url": "file:///etc/passwd"}, "base_url"),
        ({"base_url": "http://user:pw@127.0.0.1/v1"}, "base_url"),
        ({"base_url": ""}, "base_url"),  # an OpenAI-compatible server has no default URL
    ],
)
def test_an_endpoint_an_admin_cannot_save(changes: dict[str, str], field: str) -> None:
    fields = {
        "name": "bad",
        "kind": EndpointKind.OPENAI_COMPATIBLE,
        "base_url": "http://127.0.0.1:8000/v1",
        "secret_env": SECRET_ENV,
        **changes,
    }
    with pytest.raises(ValidationError) as refused:
        endpoint_register(**fields)  # type: ignore[arg-type]
    assert field in refused.value.message_dict
    assert not Endpoint.objects.filter(name="bad").exists()


def admin_form(**changes: str) -> dict[str, str]:
    return {
        "name": "vllm",
        "kind": "openai_compatible",
        "base_url": "http://127.0.0.1:8000/v1",
        "secret_env": SECRET_ENV,
        "allowed_models": "llama-3.1-8b\nqwen2.5-7b",
        "enabled": "on",
        **changes,
    }


def test_only_django_admins_register_endpoints(
    make_member: Callable[..., User], django_user_model: type[User]
) -> None:
    add = reverse("admin:catalog_endpoint_add")
    # Project roles, the project admin's included, are not site administration.
    for role in Role:
        browser = Client()
        browser.force_login(make_member(role))
        assert browser.post(add, admin_form()).status_code == 302  # to the admin's login
    staff_without_permission = django_user_model.objects.create_user("staff", is_staff=True)
    browser = Client()
    browser.force_login(staff_without_permission)
    assert browser.post(add, admin_form()).status_code == 403
    assert not Endpoint.objects.filter(name="vllm").exists()

    browser.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    refused = browser.post(add, admin_form(secret_env="DJANGO_SECRET_KEY"))
    assert refused.status_code == 200
    assert "DJANGO_SECRET_KEY is not a secret variable endpoints may use" in (
        refused.content.decode()
    )
    assert not Endpoint.objects.filter(name="vllm").exists()
    assert browser.post(add, admin_form()).status_code == 302
    assert Endpoint.objects.get(name="vllm").model_ids == ["llama-3.1-8b", "qwen2.5-7b"]


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
def test_every_member_lists_the_enabled_endpoints_without_their_secrets(
    project: Project, make_member: Callable[[Role], User], role: Role
) -> None:
    endpoint_register(
        name="vllm",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url="http://127.0.0.1:8000/v1",
        secret_env=SECRET_ENV,
        models=["llama-3.1-8b"],
    )
    endpoint_register(
        name="off", kind=EndpointKind.OPENAI, secret_env="OPENAI_API_KEY", enabled=False
    )

    response = token_client(make_member(role)).get(f"/api/projects/{project.pk}/endpoints/")

    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()["results"]}
    assert sorted(rows) == ["anthropic", "openai", "vllm"]
    assert rows["vllm"] == {
        "name": "vllm",
        "kind": "openai_compatible",
        "base_url": "http://127.0.0.1:8000/v1",
        "models": ["llama-3.1-8b"],
    }
    text = response.content.decode()
    assert SECRET_ENV not in text and SECRET not in text
    assert os.environ["OPENAI_API_KEY"] not in text


def test_non_members_get_nothing(project: Project, django_user_model: type[User]) -> None:
    outsider = token_client(django_user_model.objects.create_user("outsider"))
    assert outsider.get(f"/api/projects/{project.pk}/endpoints/").status_code == 404
    assert APIClient().get(f"/api/projects/{project.pk}/endpoints/").status_code in (401, 403)
