"""Helpers for the quality tests: conversations and the local tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from datasets.quality.tokens import TokenCounter, local_counter

LOCAL_KEY = "smollm2-135m-instruct"


def convo(question: str, answer: str, system: str | None = "Triage the ticket.") -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return [
        *messages,
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def local_model_dir() -> Path:
    return Path(settings.FTPORTAL_MODEL_CACHE) / LOCAL_KEY


@pytest.fixture(scope="session")
def local() -> TokenCounter:
    return local_counter(local_model_dir())
