"""A model version's adapter served by a registered vLLM endpoint (issue 15, item 3, GPU hosts):
the catalog builds the chat model only from an endpoint an admin registered as a vLLM server,
with its key, its max_loras and the path at which that host reads the artifact store; the
adapter's path on the server is derived from where this site stored it, never typed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from catalog.adapters import (
    served_adapter_chat_model,
    served_adapter_path,
    served_adapter_unload,
)
from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from catalog.services import endpoint_register
from evaluation.models import EvalStatus
from fakes.vllm_server import BASE_MODEL, FakeVLLMServer, expected_answer
from ftportal.models import Project
from ftportal.roles import Role
from providers.base import ProviderError
from providers.hosted_chat import OpenAICompatibleChat
from tests.api.builders import token_client
from tests.catalog.test_endpoints import execute_every_queued_run
from tests.evaluation.test_runs import held_out_version

pytestmark = pytest.mark.django_db

SECRET_ENV = "FTPORTAL_TEST_ENDPOINT_KEY"
SECRET = "sk-vllm-endpoint-secret-71d2"
ROOT = "/artifacts"


@pytest.fixture(autouse=True)
def endpoint_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def gpu_host() -> Iterator[FakeVLLMServer]:
    with FakeVLLMServer(api_key=SECRET, max_loras=2) as server:
        yield server


def register(server: FakeVLLMServer, *, name: str = "gpu", max_loras: int = 2) -> Endpoint:
    return endpoint_register(
        name=name,
        kind=EndpointKind.VLLM,
        base_url=server.base_url,
        secret_env=SECRET_ENV,
        adapter_root=ROOT,
        max_loras=max_loras,
    )


def stored_adapter(job: int) -> str:
    """An adapter directory as training leaves it, inside the artifact store."""
    path = Path(settings.FTPORTAL_ARTIFACTS_DIR) / "jobs" / str(job) / "adapter"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def build(endpoint: Endpoint | None, base_model: BaseModel, name: str, adapter_dir: str) -> object:
    return served_adapter_chat_model(
        endpoint=endpoint,
        base_model=base_model,
        adapter_name=name,
        adapter_dir=adapter_dir,
        who="Route production",
        max_in_flight=4,
    )


def test_the_adapter_is_loaded_from_the_store_on_the_server_and_answers_with_the_key(
    gpu_host: FakeVLLMServer, base_model: BaseModel
) -> None:
    gpu_host.add_adapter_files(f"{ROOT}/jobs/7/adapter")
    endpoint = register(gpu_host)

    chat = build(endpoint, base_model, "support-v3", stored_adapter(7))
    again = build(endpoint, base_model, "support-v3", stored_adapter(7))

    assert isinstance(chat, OpenAICompatibleChat) and isinstance(again, OpenAICompatibleChat)
    assert gpu_host.loads == ["support-v3"]
    assert gpu_host.loaded_adapters == {"support-v3": f"{ROOT}/jobs/7/adapter"}
    [answer] = chat.generate_many([[{"role": "user", "content": "hello"}]])
    assert answer.text == expected_answer("support-v3", "hello")


def test_the_endpoints_max_loras_bounds_what_is_loaded(
    gpu_host: FakeVLLMServer, base_model: BaseModel
) -> None:
    for job in (1, 2, 3):
        gpu_host.add_adapter_files(f"{ROOT}/jobs/{job}/adapter")
    endpoint = register(gpu_host, max_loras=2)
    build(endpoint, base_model, "v1", stored_adapter(1))
    build(endpoint, base_model, "v2", stored_adapter(2))

    with pytest.raises(ProviderError, match=r"^Route production: .*max_loras=2"):
        build(endpoint, base_model, "v3", stored_adapter(3))

    assert gpu_host.loads == ["v1", "v2"]


def test_only_a_registered_enabled_vllm_endpoint_is_used(
    gpu_host: FakeVLLMServer, base_model: BaseModel
) -> None:
    gpu_host.add_adapter_files(f"{ROOT}/jobs/1/adapter")
    adapter_dir = stored_adapter(1)

    with pytest.raises(ProviderError, match="no registered endpoint"):
        build(None, base_model, "v1", adapter_dir)
    plain = endpoint_register(
        name="plain",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url=gpu_host.base_url,
        secret_env=SECRET_ENV,
    )
    with pytest.raises(ProviderError, match="endpoint plain is not a vLLM server"):
        build(plain, base_model, "v1", adapter_dir)
    disabled = register(gpu_host, name="off")
    disabled.enabled = False
    disabled.save()
    with pytest.raises(ProviderError, match="endpoint off: it is disabled"):
        build(disabled, base_model, "v1", adapter_dir)
    narrow = register(gpu_host, name="narrow")
    narrow.allowed_models = "some-other-base"
    narrow.save()
    with pytest.raises(ProviderError, match="serves only some-other-base"):
        build(narrow, base_model, "v1", adapter_dir)

    assert gpu_host.calls == []


def test_an_adapter_outside_the_artifact_store_never_travels(
    gpu_host: FakeVLLMServer, base_model: BaseModel, tmp_path: Path
) -> None:
    endpoint = register(gpu_host)

    for outside in (str(tmp_path), "", stored_adapter(1) + "/../../../..", "/etc"):
        with pytest.raises(ProviderError, match="inside the artifact store"):
            build(endpoint, base_model, "v1", outside)

    assert gpu_host.calls == []


def test_the_path_on_the_server_keeps_the_adapters_place_in_the_store(
    gpu_host: FakeVLLMServer,
) -> None:
    endpoint = register(gpu_host)

    assert served_adapter_path(endpoint, stored_adapter(12)) == f"{ROOT}/jobs/12/adapter"


def test_registering_a_vllm_endpoint_checks_its_url_and_where_it_reads_adapters(
    gpu_host: FakeVLLMServer,
) -> None:
    with pytest.raises(ValidationError) as missing:
        endpoint_register(name="a", kind=EndpointKind.VLLM, secret_env="", adapter_root=ROOT)
    assert "base_url" in missing.value.message_dict
    for root in ("", "artifacts", "/data/../etc"):
        with pytest.raises(ValidationError) as refused:
            endpoint_register(
                name="b",
                kind=EndpointKind.VLLM,
                base_url=gpu_host.base_url,
                secret_env="",
                adapter_root=root,
            )
        assert "adapter_root" in refused.value.message_dict
    with pytest.raises(ValidationError) as zero:
        register(gpu_host, name="c", max_loras=0)
    assert "max_loras" in zero.value.message_dict

    # No key is fine: vLLM's --api-key is optional.
    keyless = endpoint_register(
        name="d",
        kind=EndpointKind.VLLM,
        base_url=gpu_host.base_url,
        secret_env="",
        adapter_root=ROOT,
    )
    assert keyless.max_loras == 4


def test_a_vllm_endpoint_cannot_fine_tune_hosted_models(gpu_host: FakeVLLMServer) -> None:
    hosted = BaseModel(
        key="gpt-4o-mini",
        display_name="GPT-4o mini",
        provider=Provider.OPENAI,
        endpoint=register(gpu_host),
    )

    with pytest.raises(ValidationError, match="OpenAI fine-tuning needs"):
        hosted.full_clean()


def test_an_admin_registers_a_vllm_server_in_the_admin(
    gpu_host: FakeVLLMServer, django_user_model: type[User]
) -> None:
    browser = Client()
    browser.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    add = reverse("admin:catalog_endpoint_add")
    form = {
        "name": "gpu",
        "kind": "vllm",
        "base_url": gpu_host.base_url,
        "secret_env": SECRET_ENV,
        "allowed_models": "",
        "adapter_root": ROOT,
        "max_loras": "",
        "enabled": "on",
    }

    refused = browser.post(add, form)
    assert refused.status_code == 200
    assert "Give the server&#x27;s --max-loras" in refused.content.decode()
    assert browser.post(add, {**form, "max_loras": "3"}).status_code == 302

    endpoint = Endpoint.objects.get(name="gpu")
    assert (endpoint.kind, endpoint.adapter_root, endpoint.max_loras) == ("vllm", ROOT, 3)


def test_unloading_through_the_catalog_frees_a_place_on_the_server(
    gpu_host: FakeVLLMServer, base_model: BaseModel
) -> None:
    for job in (1, 2):
        gpu_host.add_adapter_files(f"{ROOT}/jobs/{job}/adapter")
    endpoint = register(gpu_host, max_loras=1)
    build(endpoint, base_model, "v1", stored_adapter(1))

    unloaded = served_adapter_unload(
        endpoint=endpoint, base_model=base_model, adapter_name="v1", who="Experiment 3"
    )
    again = served_adapter_unload(
        endpoint=endpoint, base_model=base_model, adapter_name="v1", who="Experiment 3"
    )
    build(endpoint, base_model, "v2", stored_adapter(2))

    assert (unloaded, again) == (True, False)
    assert gpu_host.loaded_adapters == {"v2": f"{ROOT}/jobs/2/adapter"}


def test_the_base_model_of_a_vllm_server_is_an_evaluation_candidate(
    gpu_host: FakeVLLMServer, project: Project, make_member: Callable[[Role], User]
) -> None:
    lead = make_member(Role.ML_LEAD)
    version = held_out_version(project, lead)
    register(gpu_host)
    candidate = {"kind": "openai_compatible", "api_model": BASE_MODEL, "endpoint": "gpu"}

    created = token_client(lead).post(
        f"/api/projects/{project.pk}/evaluations/",
        {"dataset_version": version.pk, "split": "all", "candidates": [candidate]},
        format="json",
    )
    assert created.status_code == 201, created.content
    [run] = execute_every_queued_run()

    assert run.status == EvalStatus.SUCCEEDED, run.error
    assert gpu_host.answers_by_model[BASE_MODEL] > 0
