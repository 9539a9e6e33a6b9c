"""Batched greedy generation with the local provider, against the model's own generate().

What is asserted: for every prompt, the batched path gives exactly the token ids that
model.generate(do_sample=False) gives on that prompt alone (unpadded, batch of one), up to and
including the end-of-turn token; hence the same Generation (text, prompt and completion token
counts). No timings here: bench/generation.py measures the speed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from providers.base import Conversation, Generation
from providers.local import cpu_matmul
from providers.local.generation import LocalChatModel, greedy_decode, shared_prefix_length
from providers.local.weights import ensure_base_model

SYSTEM = "Classify the support ticket as billing, bug, feature or account. Answer with one word."

# Deliberately not in length order (the batch is sorted by length inside), with and without a
# system prompt of ours (so the shared prefix differs), from a few tokens to a long paragraph.
PROMPTS: list[Conversation] = [
    [{"role": "user", "content": "Write two sentences about invoices for a help page."}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "I was charged twice."}],
    [{"role": "user", "content": "Hi"}],
    [
        {
            "role": "user",
            "content": "Our team exports reports to CSV every Monday, but since the update "
            "last week the file is empty unless we pick a date range first. What should we "
            "check before contacting support again?",
        }
    ],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Add dark mode please"}],
    [{"role": "user", "content": "Name one colour of the rainbow."}],
    [{"role": "user", "content": "In a few words, why do customers ask about refunds?"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello!"}],
]
MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> LocalChatModel:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache_dir = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return LocalChatModel(ensure_base_model(cache_dir), device="cpu")


def prompt_ids(chat: LocalChatModel, conversation: Conversation) -> list[int]:
    _model, tokenizer = chat.model_and_tokenizer()
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def generate_alone(chat: LocalChatModel, conversation: Conversation) -> list[int]:
    """The reference: the model's own greedy generate() on one unpadded prompt."""
    model, tokenizer = chat.model_and_tokenizer()
    ids = prompt_ids(chat, conversation)
    with torch.inference_mode():
        output = model.generate(  # type: ignore[operator]
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens: list[int] = output[0, len(ids) :].tolist()
    return new_tokens


def generation_of(
    chat: LocalChatModel, conversation: Conversation, tokens: list[int]
) -> Generation:
    _model, tokenizer = chat.model_and_tokenizer()
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    assert isinstance(text, str)
    return Generation(
        text=text.strip(),
        prompt_tokens=len(prompt_ids(chat, conversation)),
        completion_tokens=len(tokens),
    )


@pytest.fixture(scope="module")
def reference(chat: LocalChatModel) -> list[list[int]]:
    return [generate_alone(chat, conversation) for conversation in PROMPTS]


def stop_ids(chat: LocalChatModel) -> torch.Tensor:
    _model, tokenizer = chat.model_and_tokenizer()
    return torch.tensor([tokenizer.eos_token_id])


def test_the_prompts_exercise_early_stopping_and_the_length_limit(
    chat: LocalChatModel, reference: list[list[int]]
) -> None:
    # Otherwise the tests below would not cover rows leaving the batch early.
    _model, tokenizer = chat.model_and_tokenizer()
    finished = [tokens for tokens in reference if tokenizer.eos_token_id in tokens]
    assert 0 < len(finished) < len(reference)
    assert any(len(tokens) == MAX_NEW_TOKENS for tokens in reference)


def test_greedy_decode_gives_generates_token_ids_for_each_prompt(
    chat: LocalChatModel, reference: list[list[int]]
) -> None:
    model, _tokenizer = chat.model_and_tokenizer()
    prompts = [prompt_ids(chat, conversation) for conversation in PROMPTS]

    decoded = greedy_decode(model, prompts, MAX_NEW_TOKENS, stop_ids(chat), "cpu")

    assert decoded == reference


def test_greedy_decode_is_exact_when_the_kv_cache_grows_every_step(
    chat: LocalChatModel, reference: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With room for one more position at a time, every step copies the cache into a new buffer.
    monkeypatch.setattr("providers.local.generation.KV_CACHE_GROWTH", 1)
    model, _tokenizer = chat.model_and_tokenizer()
    prompts = [prompt_ids(chat, conversation) for conversation in PROMPTS[:3]]

    decoded = greedy_decode(model, prompts, MAX_NEW_TOKENS, stop_ids(chat), "cpu")

    assert decoded == reference[:3]


def test_generate_batch_returns_generates_replies_in_input_order(
    chat: LocalChatModel, reference: list[list[int]]
) -> None:
    generations = chat.generate_batch(PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=8)

    expected = [
        generation_of(chat, conversation, tokens)
        for conversation, tokens in zip(PROMPTS, reference, strict=True)
    ]
    assert generations == expected


def test_batches_of_one_give_the_same_replies(
    chat: LocalChatModel, reference: list[list[int]]
) -> None:
    conversations = PROMPTS[:3]

    generations = chat.generate_batch(conversations, max_new_tokens=MAX_NEW_TOKENS, batch_size=1)

    assert [g.completion_tokens for g in generations] == [len(t) for t in reference[:3]]
    assert generations == [
        generation_of(chat, conversation, tokens)
        for conversation, tokens in zip(conversations, reference[:3], strict=True)
    ]


def test_completion_tokens_count_up_to_and_including_the_end_of_turn_token(
    chat: LocalChatModel, reference: list[list[int]]
) -> None:
    _model, tokenizer = chat.model_and_tokenizer()
    generations = chat.generate_batch(PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=8)

    for generation, tokens in zip(generations, reference, strict=True):
        if tokenizer.eos_token_id in tokens:
            # generate() on one prompt stops right after the end-of-turn token.
            assert tokens[-1] == tokenizer.eos_token_id
            assert generation.completion_tokens == len(tokens) < MAX_NEW_TOKENS
        else:
            assert generation.completion_tokens == MAX_NEW_TOKENS
        assert "<|im_end|>" not in generation.text


def test_on_batch_reports_every_input_once_with_its_generation(chat: LocalChatModel) -> None:
    conversations = PROMPTS[:5]
    calls: list[tuple[list[int], list[Generation]]] = []

    generations = chat.generate_batch(
        conversations,
        max_new_tokens=4,
        batch_size=2,
        on_batch=lambda indices, batch: calls.append((list(indices), list(batch))),
    )

    assert [len(indices) for indices, _batch in calls] == [2, 2, 1]
    reported = [index for indices, _batch in calls for index in indices]
    assert sorted(reported) == list(range(len(conversations)))
    for indices, batch in calls:
        assert batch == [generations[index] for index in indices]


def test_no_conversations_give_no_generations_and_no_batches(chat: LocalChatModel) -> None:
    calls: list[list[int]] = []

    generations = chat.generate_batch(
        [], max_new_tokens=4, on_batch=lambda indices, _batch: calls.append(indices)
    )

    assert generations == []
    assert calls == []


def test_shared_prefix_leaves_every_prompt_at_least_its_last_token() -> None:
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 1
    assert shared_prefix_length([[7, 8, 9]]) == 2
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0
    assert shared_prefix_length([[1], [1]]) == 0


def test_greedy_decode_runs_batched_products_through_onednn_where_it_won(
    chat: LocalChatModel, reference: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exactness tests above hold with oneDNN's products; this checks they were used.
    routed: list[tuple[int, ...]] = []
    real = cpu_matmul._onednn_linear

    def counting(
        inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        routed.append(tuple(inputs.shape[:-1]))
        return real(inputs, weight, bias)

    monkeypatch.setattr(cpu_matmul, "_onednn_linear", counting)
    # As where oneDNN was measured faster from two rows (elsewhere decoding keeps torch's).
    monkeypatch.setattr(cpu_matmul, "onednn_min_rows", lambda shapes: 2)
    model, _tokenizer = chat.model_and_tokenizer()
    prompts = [prompt_ids(chat, conversation) for conversation in PROMPTS[:2]]

    decoded = greedy_decode(model, prompts, 3, stop_ids(chat), "cpu")

    assert decoded == [tokens[:3] for tokens in reference[:2]]
    # The first token comes from the prompts' pass, whose output head multiplies both rows'
    # last positions; each of the other two from a decoding step in which every linear layer,
    # output head included, multiplies both rows.
    linear_layers = sum(isinstance(module, torch.nn.Linear) for module in model.modules())
    assert routed.count((2, 1)) == 1 + 2 * linear_layers
