"""Label scoring with the real base model: every label ranked by its log-probability after the
prompt, all labels of a prompt in one pass over a trie of their tokens.

What is asserted: the trie pass gives each label the log-probability the plain computation
gives (the prompt and the label's tokens run through the model whole, one label at a time);
prompts of different lengths in one batch score as they do alone; labels that are prefixes of
others are told apart; the answer is the likeliest label with its probability among the labels;
the trie is built right. No timings here: bench/classification.py measures the cost.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from providers.base import ChatResult, Conversation, LabelScorer, ProviderError
from providers.local.encoding import render_chat, token_ids
from providers.local.generation import LocalChatModel, stop_token_ids
from providers.local.label_scoring import LabelTrie, label_log_probs, label_sequences
from providers.local.weights import ensure_base_model

from .test_local_constrained import LABELS, PROMPTS


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> LocalChatModel:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache_dir = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return LocalChatModel(ensure_base_model(cache_dir), device="cpu")


def _sequences(chat: LocalChatModel, labels: list[str]) -> list[list[int]]:
    model, tokenizer = chat.model_and_tokenizer()
    return label_sequences(tokenizer, labels, stop_token_ids(model, tokenizer, "cpu").tolist())


def _prompt(chat: LocalChatModel, conversation: Conversation) -> list[int]:
    _model, tokenizer = chat.model_and_tokenizer()
    return token_ids(tokenizer, render_chat(tokenizer, conversation, add_generation_prompt=True))


def _plain_log_prob(chat: LocalChatModel, prompt: list[int], label: list[int]) -> float:
    """The label's log-probability from one unpadded forward pass over prompt + label."""
    model, _tokenizer = chat.model_and_tokenizer()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + label])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1
    return sum(float(log_probs[start + k, token]) for k, token in enumerate(label))


def test_the_trie_pass_gives_each_label_its_plain_log_probability(chat: LocalChatModel) -> None:
    sequences = _sequences(chat, LABELS)
    trie = LabelTrie.of(sequences)
    prompts = [_prompt(chat, conversation) for conversation in PROMPTS[:4]]
    model, _tokenizer = chat.model_and_tokenizer()

    batched = label_log_probs(model, prompts, trie, "cpu")

    assert batched.shape == (len(prompts), len(LABELS))
    # "bug", "bug report", its longer forms, a tab, quotes, accents, Chinese and "?".
    checked = [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 14, len(LABELS) - 1]
    for row, prompt in enumerate(prompts):
        for label in checked:
            plain = _plain_log_prob(chat, prompt, sequences[label])
            assert math.isclose(float(batched[row, label]), plain, abs_tol=2e-3), (row, label)


def test_a_prompt_scores_the_same_alone_and_in_a_batch_of_other_lengths(
    chat: LocalChatModel,
) -> None:
    trie = LabelTrie.of(_sequences(chat, LABELS))
    prompts = [_prompt(chat, conversation) for conversation in PROMPTS]
    model, _tokenizer = chat.model_and_tokenizer()
    assert len({len(prompt) for prompt in prompts}) > 3

    together = label_log_probs(model, prompts, trie, "cpu")

    for row, prompt in enumerate(prompts):
        alone = label_log_probs(model, [prompt], trie, "cpu")[0]
        assert torch.allclose(together[row], alone, atol=2e-3), row


def test_each_answer_is_the_likeliest_label_with_its_probability_among_the_labels(
    chat: LocalChatModel,
) -> None:
    reported: dict[int, ChatResult] = {}
    batches: list[int] = []

    results = chat.score_labels_many(
        PROMPTS,
        LABELS,
        batch_size=3,
        before_batch=lambda: batches.append(len(reported)),
        on_result=lambda index, result: reported.__setitem__(index, result),
    )

    assert isinstance(chat, LabelScorer)
    assert batches == [0, 3, 6]
    assert [reported[index] for index in range(len(PROMPTS))] == results
    model, _tokenizer = chat.model_and_tokenizer()
    trie = LabelTrie.of(_sequences(chat, LABELS))
    for conversation, result in zip(PROMPTS, results, strict=True):
        scores = label_log_probs(model, [_prompt(chat, conversation)], trie, "cpu")[0]
        probabilities = torch.softmax(scores, dim=-1)
        assert result.text == LABELS[int(scores.argmax())]
        assert result.confidence is not None
        assert math.isclose(result.confidence, float(probabilities.max()), rel_tol=1e-4)
        assert 0 < result.confidence <= 1
        assert result.completion_tokens == len(_sequences(chat, [result.text])[0])


def test_a_label_and_its_extension_are_different_answers(chat: LocalChatModel) -> None:
    # "bug" ends where "bug report" goes on: only the end-of-turn token tells them apart.
    sequences = _sequences(chat, ["bug", "bug report"])
    assert sequences[0][:-1] == sequences[1][: len(sequences[0]) - 1]
    trie = LabelTrie.of(sequences)
    model, _tokenizer = chat.model_and_tokenizer()

    scores = label_log_probs(model, [_prompt(chat, PROMPTS[2])], trie, "cpu")[0]

    assert float(scores[0]) != float(scores[1])


def test_the_trie_shares_prefixes_and_keeps_each_labels_path() -> None:
    trie = LabelTrie.of([[5, 6, 2], [5, 7, 2], [5, 6, 8, 2], [9, 2]])

    # 5, then 6 and 7 under it, 8 under 6, 9 alone, and each label's own end token: 9 nodes.
    assert len(trie) == 9
    assert [[trie.tokens[node] for node in path] for path in trie.label_paths] == [
        [5, 6, 2],
        [5, 7, 2],
        [5, 6, 8, 2],
        [9, 2],
    ]
    assert all(trie.parents[node] < node for node in range(len(trie)))
    assert trie.depths == tuple(
        0 if parent < 0 else trie.depths[parent] + 1 for parent in trie.parents
    )


def test_labels_with_the_same_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="same tokens"):
        LabelTrie.of([[1, 2], [1, 2]])
    with pytest.raises(ProviderError, match="at least one label"):
        LocalChatModel(Path("unused"), device="cpu").score_labels_many(PROMPTS, [])
