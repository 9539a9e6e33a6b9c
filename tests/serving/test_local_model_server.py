"""The local model server (``providers.local.model_server``) behind the gateway: the ``openai``
client asks the gateway under uvicorn, the gateway asks the server in its own process over
HTTP (FTPORTAL_GATEWAY_LOCAL_SERVER_URL), the server answers with the real 135M model and the
version's adapter, loaded there under ``version-<id>``. Concurrent requests share a batch; an
unknown adapter is a clear 404; a server killed mid-request is a prompt 503 whose log row says
so.

The adapters are made, not trained (LoRA starts as a no-op), so the answers must be the base
model's own, computed here in process for comparison."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from django.contrib.auth.models import User
from openai.types.chat import ChatCompletionMessageParam

from catalog.adapters import local_chat_model
from catalog.models import BaseModel
from costs.local_serving import local_serving_time_record
from costs.models import LedgerEntry
from ftportal.models import Project
from ftportal.spending import SpendKind, SpendUnit
from registry.models import ModelVersion
from registry.services import model_version_register
from serving.backends import backends_forget, vllm_adapter_name
from serving.models import RequestLog
from serving.services import application_key_create
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

from .gateway_server import running_gateway
from .local_model_server import LocalModelServer, running_local_model_server
from .test_gateway import promote
from .test_gateway_local import untrained_adapter

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = "I was charged twice this month"
MODEL = "Ticket triage/production"
MAX_TOKENS = 6
# Generous: both cores may be busy with other tests; nothing here waits on a timer to pass.
CLIENT_TIMEOUT_S = 180
POLL_TIMEOUT_S = 120


@pytest.fixture(autouse=True)
def no_kept_backends() -> Iterator[None]:
    backends_forget()
    yield
    backends_forget()


@pytest.fixture
def server(tmp_path: Path, settings: Any) -> Iterator[LocalModelServer]:
    with running_local_model_server(tmp_path) as running:
        settings.FTPORTAL_GATEWAY_LOCAL_SERVER_URL = running.origin
        yield running


def production_version(
    project: Project, lead: User, base_model: BaseModel, adapter_root: Path
) -> ModelVersion:
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
    adapter = untrained_adapter(base_model, adapter_root / "adapters" / "job")
    version = model_version_register(job=job, checkpoint=None, adapter_dir=str(adapter))
    promote(version, lead)
    return version


def client(origin: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{origin}/v1", api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {POLL_TIMEOUT_S}s for {what}")
        time.sleep(0.05)


def test_the_gateway_answers_through_the_local_model_server_with_the_versions_adapter(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    version = production_version(project, lead, base_model, tmp_path)
    key = application_key_create(project=project, user=lead, name="app").plaintext
    messages = [{"role": "user", "content": QUESTION}]

    with running_gateway() as origin:
        answer = client(origin, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS
        )

    [expected] = local_chat_model(base_model=base_model).generate_many(
        [messages], max_new_tokens=MAX_TOKENS
    )
    assert answer.model == "Ticket triage/triage@1"
    assert answer.choices[0].message.content == expected.text != ""
    assert answer.usage is not None
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    # Answered by the server, with the adapter loaded there under the version's name.
    served = client(server.origin, "local").models.list()
    assert vllm_adapter_name(version) in {model.id for model in served.data}
    metrics = server.metrics()
    assert metrics["requests"] == 1
    # Its decoding time is the version's, and the ledger's reading of it a serving spend.
    decoded = metrics["busy_seconds"][vllm_adapter_name(version)]
    assert decoded > 0
    assert local_serving_time_record() == 1
    spend = LedgerEntry.objects.get(model_version=version, kind=SpendKind.SERVING)
    assert spend.unit == SpendUnit.COMPUTE_SECONDS
    assert spend.quantity == Decimal(str(decoded)).quantize(Decimal("0.001"), ROUND_DOWN)
    assert spend.event.startswith(f"local_serving:{metrics['instance']}:")


def test_a_streamed_request_through_the_gateway_gets_the_same_answer_as_a_plain_one(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    production_version(project, lead, base_model, tmp_path)
    key = application_key_create(project=project, user=lead, name="app").plaintext

    with running_gateway() as origin:
        api = client(origin, key)
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
        plain = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
        chunks = list(
            api.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=MAX_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == plain.choices[0].message.content != ""
    # The server decodes a batch whole, then sends it as events: asked as a stream, with usage.
    usage = chunks[-1].usage
    assert usage is not None and plain.usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens
    assert server.metrics()["requests"] == 2


def test_concurrent_requests_through_the_gateway_are_decoded_together(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    production_version(project, lead, base_model, tmp_path)
    key = application_key_create(project=project, user=lead, name="app").plaintext
    answers: list[str] = []
    failures: list[BaseException] = []

    with running_gateway() as origin:
        api = client(origin, key)

        def ask(number: int) -> None:
            try:
                completion = api.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"{QUESTION} ({number})"}],
                    max_tokens=MAX_TOKENS,
                )
                answers.append(completion.choices[0].message.content or "")
            except openai.OpenAIError as error:
                failures.append(error)

        # Rounds of 8 at once until one batch held more than one request: while a batch
        # decodes the others queue, so a round almost always shares; counting rounds, not
        # waiting on a timer, makes it certain on busy cores.
        for _ in range(5):
            threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=CLIENT_TIMEOUT_S)
            if server.metrics()["max_batch_size"] > 1:
                break
    metrics = server.metrics()
    assert failures == []
    assert metrics["max_batch_size"] > 1
    assert metrics["batches"] < metrics["requests"] == len(answers)
    assert all(answers)


def test_an_unknown_adapter_is_a_clear_404(server: LocalModelServer, tmp_path: Path) -> None:
    api = client(server.origin, "local")
    with pytest.raises(openai.NotFoundError) as unknown:
        api.chat.completions.create(
            model="version-999999", messages=[{"role": "user", "content": QUESTION}]
        )
    assert "The model `version-999999` does not exist." in str(unknown.value)
    with pytest.raises(openai.NotFoundError) as outside:
        api.post(
            "/load_lora_adapter",
            body={"lora_name": "elsewhere", "lora_path": "/etc"},
            cast_to=str,
        )
    assert "inside the server's adapter root" in str(outside.value)
    with pytest.raises(openai.NotFoundError) as empty:
        api.post(
            "/load_lora_adapter",
            body={"lora_name": "empty", "lora_path": str(tmp_path)},
            cast_to=str,
        )
    assert "No LoRA adapter at" in str(empty.value)


def test_a_server_killed_mid_request_is_a_prompt_503_and_a_logged_error(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    production_version(project, lead, base_model, tmp_path)
    key = application_key_create(project=project, user=lead, name="app").plaintext
    outcome: list[BaseException | str] = []

    with running_gateway() as origin:

        def ask() -> None:
            try:
                completion = client(origin, key).chat.completions.create(
                    model=MODEL,
                    # A long answer, so that it is still decoding when the server dies.
                    messages=[{"role": "user", "content": "Count from 1 to 500 in words."}],
                    max_tokens=2000,
                )
                outcome.append(completion.choices[0].message.content or "")
            except openai.OpenAIError as error:
                outcome.append(error)

        asking = threading.Thread(target=ask)
        asking.start()
        poll(lambda: server.metrics()["decoding"] == 1, "the request to be decoding")
        server.process.kill()
        server.process.wait(timeout=30)
        asking.join(timeout=CLIENT_TIMEOUT_S)
        assert not asking.is_alive(), "the client still waits on a dead server"

    [error] = outcome
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == 503
    assert error.code == "backend_unavailable"
    row = RequestLog.objects.get(project=project)
    assert row.status == "error"
    assert row.error == "The backend of Ticket triage/triage@1 is unavailable; try again later."
    assert row.output == ""


def test_after_a_restart_of_the_local_model_server_the_first_request_loads_the_adapter_again(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    version = production_version(project, lead, base_model, tmp_path)
    key = application_key_create(project=project, user=lead, name="app").plaintext
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]

    with running_gateway() as origin:
        api = client(origin, key)
        before = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
        server.process.kill()
        server.process.wait(timeout=30)
        # Back on the same address, knowing no adapter: the gateway's kept chat meets a 404.
        with running_local_model_server(tmp_path, port=server.port) as restarted:
            assert restarted.metrics()["adapters_registered"] == 0
            after = api.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            metrics = restarted.metrics()
            listed = {model.id for model in client(restarted.origin, "local").models.list().data}

    assert after.choices[0].message.content == before.choices[0].message.content != ""
    assert metrics["adapters_registered"] == 1
    assert metrics["requests"] == 1
    served = [row.status for row in RequestLog.objects.filter(project=project).order_by("pk")]
    assert served == ["ok", "ok"]
    assert vllm_adapter_name(version) in listed


def test_a_version_of_another_base_model_is_refused_not_served_on_the_wrong_one(
    project: Project, lead: User, base_model: BaseModel, server: LocalModelServer, tmp_path: Path
) -> None:
    version = production_version(project, lead, base_model, tmp_path)
    other = BaseModel.objects.create(
        key="other-local-model",
        display_name="Another local model",
        provider=base_model.provider,
        parameter_count=1,
    )
    ModelVersion.objects.filter(pk=version.pk).update(base_model=other)
    key = application_key_create(project=project, user=lead, name="app").plaintext

    with running_gateway() as origin, pytest.raises(openai.APIStatusError) as refused:
        client(origin, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=2
        )

    assert refused.value.status_code == 502
    assert server.metrics()["requests"] == 0
    assert server.metrics()["adapters_registered"] == 0
