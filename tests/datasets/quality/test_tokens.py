"""Token counts match the tokenizers themselves, and OpenAI encodings load offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from datasets.quality import tokens
from datasets.quality.tokens import (
    TIKTOKEN_SPECS,
    count_conversations,
    render_chat_template,
    tiktoken_counter,
)

from .conftest import convo, local_model_dir

SAMPLES = [
    "Subject: Two charges for the same invoice\n\nPlease refund the second one.",
    '{"category": "billing", "priority": "high"}',
    "Ünïcode wörds, emoji 🎉 and 日本語",
    "",
]


def test_local_counts_match_the_tokenizer_and_the_rendered_chat_template(local):
    direct = Tokenizer.from_file(str(local_model_dir() / "tokenizer.json"))
    expected = [len(direct.encode(text, add_special_tokens=False)) for text in SAMPLES]
    assert local.lengths(SAMPLES).tolist() == expected
    template = (local_model_dir() / "chat_template.jinja").read_text()
    for conversation in (convo(SAMPLES[0], SAMPLES[1]), convo(SAMPLES[2], "ok", system=None)):
        rendered = render_chat_template(template, conversation)
        counted = count_conversations([conversation], local)
        assert counted.total[0] == len(direct.encode(rendered, add_special_tokens=False))
        assert counted.answer[0] == len(
            direct.encode(conversation[-1]["content"], add_special_tokens=False)
        )


def test_the_local_template_overhead_is_measured_not_guessed(local):
    # SmolLM2 wraps each message in <|im_start|>role\n ... <|im_end|>\n and adds its default
    # system prompt when the conversation has none.
    assert 3 <= local.template.per_message["user"] <= 8
    assert local.template.implicit_system > 10


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_openai_counts_match_tiktoken_and_the_cookbook_overhead(name):
    counter = tiktoken_counter(name)
    encoding = tokens.tiktoken_encoding(name)
    assert counter.lengths(SAMPLES).tolist() == [len(encoding.encode(t)) for t in SAMPLES]
    conversation = convo(SAMPLES[0], SAMPLES[1])
    counted = count_conversations([conversation], counter)
    # The cookbook: 3 per message, plus the tokens of every value (role and content), plus 3.
    expected = 3 + sum(
        3 + len(encoding.encode(m["role"])) + len(encoding.encode(m["content"]))
        for m in conversation
    )
    assert counted.total[0] == expected
    assert counted.answer[0] == len(encoding.encode(SAMPLES[1]))


def test_malformed_conversations_count_what_can_be_counted():
    counter = tiktoken_counter("o200k_base")
    encoding = tokens.tiktoken_encoding("o200k_base")
    per_message = counter.template.per_message
    widest = max(per_message.values())  # an unknown role costs as much as the dearest one
    conversations = [
        None,
        [],
        [{"role": ["user"], "content": "hi there", "name": 7}, "not a message"],
        [{"role": "user", "content": {"text": "x"}}, {"role": "assistant", "content": "ok"}],
    ]
    counted = count_conversations(conversations, counter)
    assert counted.total[:2].tolist() == [0, 0]
    assert counted.total[2] == 3 + widest + len(encoding.encode("hi there"))
    assert counted.answer[2] == 0
    assert counted.total[3] == 3 + per_message["user"] + per_message["assistant"] + 1
    assert counted.answer[3] == len(encoding.encode("ok")) == 1


def test_a_known_o200k_encoding_is_reproduced():
    # "hello world" is two tokens in o200k_base: 24912 ("hello") and 2375 (" world").
    assert tokens.tiktoken_encoding("o200k_base").encode("hello world") == [24912, 2375]


@pytest.mark.parametrize("name", sorted(TIKTOKEN_SPECS))
def test_our_encoding_constants_are_tiktokens_own(name, monkeypatch):
    # Call tiktoken's constructor with the download replaced, and compare what it would build.
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    published = openai_public.ENCODING_CONSTRUCTORS[name]()
    spec = TIKTOKEN_SPECS[name]
    assert published["pat_str"] == spec.pat_str
    assert published["special_tokens"] == spec.special_tokens


def test_tiktoken_encodings_load_with_the_network_blocked(tmp_path, monkeypatch):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked in this test")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    tokens._tiktoken_encoding.cache_clear()
    try:
        encoding = tokens.tiktoken_encoding("cl100k_base")
        assert encoding.encode("hello world") == tiktoken_reference_ids()
    finally:
        tokens._tiktoken_encoding.cache_clear()
    assert attempts == []
    # Nothing was fetched into the (empty) cache under a URL's name; at most the local file.
    assert all(Path(p).stat().st_size > 0 for p in tmp_path.iterdir())


def tiktoken_reference_ids() -> list[int]:
    # cl100k_base: "hello" = 15339, " world" = 1917 (documented in the OpenAI cookbook).
    return [15339, 1917]


def test_the_bundled_file_must_match_the_expected_hash(tmp_path, monkeypatch):
    bad = tmp_path / TIKTOKEN_SPECS["o200k_base"].bpe_file
    bad.write_bytes(b"aGVsbG8= 0\n")
    monkeypatch.setattr(tokens, "bundled_bpe_dir", lambda: tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    tokens._tiktoken_encoding.cache_clear()
    try:
        with pytest.raises(tokens.TokenizerUnavailable, match="Hash mismatch"):
            tokens.tiktoken_encoding("o200k_base")
    finally:
        tokens._tiktoken_encoding.cache_clear()


def test_unknown_encodings_are_refused():
    with pytest.raises(tokens.TokenizerUnavailable, match="unknown tokenizer"):
        tokens.tiktoken_encoding("p50k_base")


def test_repeated_texts_are_encoded_once():
    seen: list[str] = []
    base = tiktoken_counter("o200k_base")
    counter = tokens.TokenCounter(
        name="spy",
        encode_length=lambda text: seen.append(text) or base.encode_length(text),
        template=base.template,
    )
    assert (
        counter.lengths(["a b", "a b", "c"]).tolist() == base.lengths(["a b", "a b", "c"]).tolist()
    )
    assert seen == ["a b", "c"]


def test_repeated_words_are_encoded_once():
    seen: list[str] = []
    base = tiktoken_counter("o200k_base")
    counter = tokens.TokenCounter(
        name="spy",
        encode_length=lambda text: seen.append(text) or base.encode_length(text),
        template=base.template,
        word_additive=True,
    )
    texts = ["refund my order", "refund the order", "order refund"]
    assert counter.lengths(texts).tolist() == base.lengths(texts).tolist()
    # First words as they are, later words with their leading space, each encoded once.
    assert sorted(seen) == sorted([" my", " order", " the", " refund", "refund", "order"])


def test_tiktoken_is_the_installed_version_we_read_constants_from():
    assert tiktoken.__version__.startswith("0.")


TRICKY = [
    "plain words here",
    " leading space",
    "trailing space ",
    "double  space",
    "tab\t and  newline \n here",
    "don't you'll we've I'm",
    "numbers 1234567 and 3.14 and -42",
    "punctuation!! (yes) [no] {maybe}, ok...",
    "Subject: refund\n\nHi team,\n\nPlease refund.\n\nThanks,\nAmara",
    "unicode café naïve 日本語 テスト emoji 🎉🎉 done",
    "nbsp\u00a0here and\u2003em space",
    "<|im_start|>user special token <|im_end|> inside",
    "a\r\nwindows\r\nlines",
    "",
    " ",
    "x",
]


@pytest.fixture(scope="module")
def counters(local):
    return [local, tiktoken_counter("o200k_base"), tiktoken_counter("cl100k_base")]


def whole_text_lengths(counter, texts):
    return [counter.encode_length(text) for text in texts]


def test_counting_by_words_equals_encoding_whole_texts(counters):
    for counter in counters:
        assert counter.word_additive, counter.name
        assert counter.lengths(TRICKY).tolist() == whole_text_lengths(counter, TRICKY), counter.name


ALPHABET = "ab Z9'.,!-\n\t \u00a0é日🎉<|>_"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.text(alphabet=ALPHABET, max_size=40), min_size=1, max_size=8))
def test_counting_by_words_is_exact_for_any_text(counters, texts):
    for counter in counters:
        assert counter.lengths(texts).tolist() == whole_text_lengths(counter, texts), counter.name
