"""Every provider adapter Django code uses is built in one place, ``catalog.adapters`` (issue
14, item 2): evaluation's candidates and judges get their chat models from it, of the kind their
catalog row or endpoint names, and no other Django module imports an adapter's provider
module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

from catalog.models import BaseModel, Endpoint, EndpointKind
from catalog.weights import base_model_dir
from evaluation.models import Candidate, CandidateKind, EvalRun
from evaluation.runner import _judge_chat, chat_for
from providers.hosted_chat import AnthropicChat, OpenAICompatibleChat
from providers.local.generation import LocalChatModel
from training.models import Checkpoint

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
# Not Django code: the providers themselves, and what only tests or measures them.
NOT_DJANGO = {"providers", "tests", "fakes", "bench", "scripts"}
# The provider modules whose classes call a model or train one.
ADAPTER_MODULES = (
    "providers.local.training",
    "providers.local.generation",
    "providers.hosted_chat",
    "providers.openai_ft",
    "providers.vllm",
)
BUILDER = Path("catalog/adapters.py")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_adapter_module(name: str) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in ADAPTER_MODULES)


def test_no_django_module_but_the_builder_imports_a_provider_adapter() -> None:
    packages = [
        path.parent
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in NOT_DJANGO and not path.parent.name.startswith(".")
    ]
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in packages
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(ROOT) != BUILDER
        for name in sorted(imported_modules(path))
        if is_adapter_module(name)
    ]
    assert offenders == []


def test_a_local_base_candidate_and_a_local_judge_answer_with_the_local_model(
    base_model: BaseModel,
) -> None:
    candidate = Candidate(kind=CandidateKind.BASE, label="Base", base_model=base_model)
    judged = EvalRun(judge_kind=CandidateKind.BASE, judge_model=base_model.key)

    for chat in (chat_for(candidate), _judge_chat(judged)):
        assert isinstance(chat, LocalChatModel)
        assert chat.base_model_dir == base_model_dir(base_model).resolve()
        assert chat.adapter_dir is None


def test_a_checkpoint_with_an_adapter_answers_with_the_adapter_on_its_base_model(
    base_model: BaseModel, tmp_path: Path
) -> None:
    candidate = Candidate(
        kind=CandidateKind.CHECKPOINT,
        label="checkpoint 6",
        base_model=base_model,
        checkpoint=Checkpoint(step=6, path=str(tmp_path)),
    )

    chat = chat_for(candidate)

    assert isinstance(chat, LocalChatModel)
    assert chat.base_model_dir == base_model_dir(base_model).resolve()
    assert chat.adapter_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("kind", "adapter"),
    [
        (EndpointKind.OPENAI_COMPATIBLE, OpenAICompatibleChat),
        (EndpointKind.ANTHROPIC, AnthropicChat),
    ],
)
def test_an_endpoint_candidate_and_judge_speak_their_endpoints_api(
    kind: EndpointKind, adapter: type[OpenAICompatibleChat | AnthropicChat]
) -> None:
    endpoint = Endpoint.objects.create(
        name=f"home-{kind}", kind=kind, base_url="http://127.0.0.1:9/v1", secret_env="FAKE_CHAT_KEY"
    )
    candidate = Candidate(kind=kind, label="Hosted", endpoint=endpoint, api_model="served-model")
    judged = EvalRun(judge_kind=kind, judge_model="served-model", judge_endpoint=endpoint)

    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("FAKE_CHAT_KEY", "sk-fake")
        chats = [chat_for(candidate), _judge_chat(judged)]
    for chat in chats:
        assert isinstance(chat, adapter)
        assert chat.model == "served-model"
        assert chat.max_in_flight == settings.FTPORTAL_EVAL_MAX_IN_FLIGHT
        chat.close()
