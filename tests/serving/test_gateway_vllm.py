"""Versions trained here served from a GPU host: with FTPORTAL_GATEWAY_VLLM_ENDPOINT naming a
registered vLLM endpoint, the gateway loads a version's adapter there once (as
``version-<id>``) and asks for it by that name; an adapter the server lost (a restart) is
loaded again by the request that finds it gone, which is then answered. Against the fake vLLM
server, through uvicorn and the ``openai`` client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from django.contrib.auth.models import User
from openai.types.chat import ChatCompletionMessageParam

from catalog.adapters import served_adapter_unload
from catalog.models import BaseModel, EndpointKind
from catalog.services import endpoint_register
from fakes.vllm_server import FakeVLLMServer, expected_answer
from ftportal.models import Project
from registry.services import model_version_register
from serving.backends import backends_forget, vllm_adapter_name
from serving.services import application_key_create
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

from .gateway_server import running_gateway
from .test_gateway import promote

pytestmark = pytest.mark.django_db(transaction=True)
SECRET_ENV = "FTPORTAL_TEST_ENDPOINT_KEY"
SECRET = "sk-vllm-gateway-secret"
ROOT = "/artifacts"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "refund please"}]


@pytest.fixture(autouse=True)
def endpoint_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    backends_forget()
    yield
    backends_forget()


@pytest.fixture
def gpu_host() -> Iterator[FakeVLLMServer]:
    with FakeVLLMServer(api_key=SECRET, max_loras=2) as server:
        yield server


def test_a_local_version_is_served_by_the_named_vllm_endpoint_and_reloaded_when_lost(
    project: Project,
    lead: User,
    base_model: BaseModel,
    gpu_host: FakeVLLMServer,
    settings: Any,
) -> None:
    endpoint = endpoint_register(
        name="gpu",
        kind=EndpointKind.VLLM,
        base_url=gpu_host.base_url,
        secret_env=SECRET_ENV,
        adapter_root=ROOT,
        max_loras=2,
    )
    settings.FTPORTAL_GATEWAY_VLLM_ENDPOINT = "gpu"
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    stored = Path(settings.FTPORTAL_ARTIFACTS_DIR) / "jobs" / str(job.pk) / "adapter"
    stored.mkdir(parents=True, exist_ok=True)  # job ids restart in each transactional test
    gpu_host.add_adapter_files(f"{ROOT}/jobs/{job.pk}/adapter")
    version = model_version_register(job=job, checkpoint=None, adapter_dir=str(stored))
    promote(version, lead)
    name = vllm_adapter_name(version)
    key = application_key_create(project=project, user=lead, name="gpu app").plaintext

    with running_gateway() as origin:
        api = openai.OpenAI(base_url=f"{origin}/v1", api_key=key, max_retries=0, timeout=30)

        def ask() -> str:
            answer = api.chat.completions.create(
                model="Ticket triage/production", messages=QUESTION
            )
            return answer.choices[0].message.content or ""

        assert ask() == expected_answer(name, "refund please")
        assert ask() == expected_answer(name, "refund please")
        assert gpu_host.loads == [name]  # loaded once, then asked by name

        # The server lost the adapter (an operator unloaded it, or the server restarted): the
        # request that finds it gone loads it again and is answered.
        served_adapter_unload(
            endpoint=endpoint, base_model=base_model, adapter_name=name, who="test"
        )
        assert ask() == expected_answer(name, "refund please")
        assert gpu_host.loads == [name, name]
        gpu_host.restart()
        assert ask() == expected_answer(name, "refund please")
        assert gpu_host.loads == [name, name, name]

        # Lost again right after loading it: an error, as any other, not a loop.
        gpu_host.restart_before_next_chats(2)
        with pytest.raises(openai.APIStatusError) as lost_twice:
            ask()
        assert lost_twice.value.status_code == 502
        assert gpu_host.loads == [name, name, name, name]
        assert ask() == expected_answer(name, "refund please")

        settings.FTPORTAL_GATEWAY_VLLM_ENDPOINT = "nowhere"
        with pytest.raises(openai.APIStatusError) as unregistered:
            ask()
        assert unregistered.value.status_code == 502
