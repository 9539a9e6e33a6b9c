"""A version trained here, served by the gateway from the local model in its process: its LoRA
adapter on the embedded base model, through a real uvicorn server and the ``openai`` client.

The adapter is made, not trained (LoRA starts as a no-op), so the test costs one load of the
135M model and two short generations, and the answer must be the base model's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
from django.contrib.auth.models import User
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from catalog.adapters import local_chat_model
from catalog.models import BaseModel
from catalog.weights import base_model_dir
from ftportal.models import Project
from registry.services import model_version_register
from serving.backends import backends_forget
from serving.services import application_key_create
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

from .gateway_server import running_gateway
from .test_gateway import promote

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = "I was charged twice this month"
MAX_TOKENS = 6


def untrained_adapter(base: BaseModel, directory: Path) -> Path:
    """A LoRA adapter as training starts one: B is zero, so it changes nothing."""
    model = AutoModelForCausalLM.from_pretrained(
        base_model_dir(base), dtype=torch.float32, local_files_only=True
    )
    lora = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora.save_pretrained(str(directory))
    return directory


@pytest.fixture(autouse=True)
def no_kept_backends() -> Iterator[None]:
    backends_forget()
    yield
    backends_forget()


def test_a_local_version_answers_with_its_adapter_on_the_local_base_model(
    project: Project, lead: User, base_model: BaseModel, tmp_path: Path
) -> None:
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
    adapter = untrained_adapter(base_model, tmp_path / "adapter")
    version = model_version_register(job=job, checkpoint=None, adapter_dir=str(adapter))
    promote(version, lead)
    key = application_key_create(project=project, user=lead, name="local app").plaintext
    messages = [{"role": "user", "content": QUESTION}]

    with running_gateway() as origin:
        api = openai.OpenAI(base_url=f"{origin}/v1", api_key=key, max_retries=0, timeout=120)
        answer = api.chat.completions.create(
            model="Ticket triage/production",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
        )

    [expected] = local_chat_model(base_model=base_model).generate_many(
        [messages], max_new_tokens=MAX_TOKENS
    )
    assert answer.model == "Ticket triage/triage@1"
    assert answer.choices[0].message.content == expected.text != ""
    assert answer.usage is not None
    assert answer.usage.completion_tokens == expected.completion_tokens <= MAX_TOKENS
    assert answer.usage.prompt_tokens == expected.prompt_tokens
