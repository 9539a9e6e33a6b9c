"""Token counts as the chosen base model sees them, offline.

Two kinds of tokenizer:
- the local model's own ``tokenizer.json``, loaded with the ``tokenizers`` library (never the
  weights), plus the chat template's per-message overhead, measured once by rendering the
  model's own template;
- for OpenAI models a tiktoken encoding built from the BPE file that ships inside the litellm
  package, checked against tiktoken's published hash, so nothing is ever downloaded.

Counting is batched: every distinct string is encoded once (a dataset repeats its system
prompt and its short answers thousands of times) with the libraries' batch encoders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

CHAT_ROLES = ("system", "user", "assistant")

# tiktoken's own constants for the encodings OpenAI's fine-tunable models use, as written in
# tiktoken_ext/openai_public.py (tiktoken 0.14); tests check they still match the installed
# tiktoken. Only the BPE ranks come from a file, and that file ships in the litellm package
# under the sha1 of the URL tiktoken would otherwise download it from.
ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class TiktokenSpec:
    bpe_file: str  # file name inside litellm/litellm_core_utils/tokenizers/
    expected_hash: str  # sha256 tiktoken expects for the ranks file
    pat_str: str
    special_tokens: dict[str, int]


TIKTOKEN_SPECS: dict[str, TiktokenSpec] = {
    "o200k_base": TiktokenSpec(
        bpe_file="fb374d419588a4632f3f557e76b4b70aebbca790",
        expected_hash="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
    "cl100k_base": TiktokenSpec(
        bpe_file="9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        expected_hash="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        special_tokens={
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
}

# OpenAI's chat format costs a few tokens around each message; the OpenAI cookbook counts 3
# per message plus the tokens of the role, 1 more for a name, and 3 that prime the reply.
OPENAI_TOKENS_PER_MESSAGE = 3
OPENAI_TOKENS_PER_NAME = 1
OPENAI_REPLY_PRIMING = 3

# Used when a local model folder has no chat template of its own: the ChatML layout SmolLM2
# and many other small instruct models use.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
)


class TokenizerUnavailable(Exception):
    """The tokenizer for a base model cannot be loaded offline."""


@dataclass(frozen=True)
class TemplateCost:
    """Tokens the chat format adds around the message texts."""

    per_message: dict[str, int]
    # Added once when the conversation does not start with a system message (a template that
    # inserts a default system prompt, as SmolLM2's does).
    implicit_system: int = 0
    per_conversation: int = 0
    per_name: int = 0
    # Of per_message, the tokens before the text (the role's header), where measured.
    per_header: dict[str, int] = field(default_factory=dict)

    def message(self, role: object) -> int:
        if isinstance(role, str) and role in self.per_message:
            return self.per_message[role]
        return max(self.per_message.values(), default=0)


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of many strings at once; ``name`` says which tokenizer it is.

    ``word_additive`` says the tokenizer never lets a token cross a single space that sits
    between two non-space characters (true of GPT-2-style byte-level BPE and of tiktoken's
    cl100k/o200k patterns: every pre-token that holds a space starts with it). Then a text's
    count is the sum of its space-separated words' counts, and a corpus has far fewer
    distinct words than texts, so each distinct word is encoded once.
    """

    name: str
    encode_length: Callable[[str], int]
    template: TemplateCost
    word_additive: bool = False

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of each text, encoding every distinct text (or word) once."""
        positions: dict[str, int] = {}
        index = np.fromiter(
            (positions.setdefault(text, len(positions)) for text in texts),
            dtype=np.int64,
            count=len(texts),
        )
        unique = list(positions)
        counts = (
            self._word_lengths(unique)
            if self.word_additive
            else [self.encode_length(text) for text in unique]
        )
        unique_lengths = np.asarray(counts, dtype=np.int64)
        return unique_lengths[index] if len(texts) else np.zeros(0, dtype=np.int64)

    def _word_lengths(self, texts: list[str]) -> list[int]:
        encode = self.encode_length
        # A word is encoded the first time it is looked up (a dict's __missing__), so one pass
        # splits each text, counts it and learns its new words, with no word lists kept.
        first_words = _LengthCache(encode)  # a text's first word, as is
        later_words = _LengthCache(lambda word: encode(" " + word))  # with its leading space
        later = later_words.__getitem__
        result: list[int] = []
        for text in texts:
            # A text with a space next to other whitespace, or at either end, is encoded
            # whole: there a space may belong to a whitespace token, not start a word.
            if _space_beside_whitespace(text):
                result.append(encode(text))
                continue
            words = text.split(" ")
            result.append(first_words[words[0]] + sum(map(later, islice(words, 1, None))))
        return result


class _LengthCache(dict[str, int]):
    """Token counts by text, each computed on first lookup."""

    def __init__(self, encode_length: Callable[[str], int]) -> None:
        super().__init__()
        self._encode_length = encode_length

    def __missing__(self, text: str) -> int:
        length = self[text] = self._encode_length(text)
        return length


# A space beside another whitespace character (Python's \s is a superset of the tokenizers'
# whitespace classes, so this errs towards encoding a text whole).
_SPACE_BESIDE_WHITESPACE = re.compile(r"[ ]\s|\s[ ]")


def _space_beside_whitespace(text: str) -> bool:
    """Whether a space sits at either end of ``text`` or beside other whitespace.

    Plain substring tests settle the usual ASCII text; the regex runs only for the rest.
    """
    if text[:1] == " " or text[-1:] == " " or "  " in text or " \n" in text or "\n " in text:
        return True
    if text.isascii() and not ("\t" in text or "\r" in text or "\x0b" in text or "\x0c" in text):
        return False
    return _SPACE_BESIDE_WHITESPACE.search(text) is not None


@dataclass(frozen=True)
class ConversationTokens:
    """Per example: tokens before the answer (all earlier messages and the chat format's
    overhead), tokens of the final assistant answer, and their sum (what training sees)."""

    prompt: np.ndarray
    answer: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.prompt + self.answer


def count_conversations(
    conversations: Sequence[object], counter: TokenCounter
) -> ConversationTokens:
    """Token counts of each conversation; malformed messages count what can be counted."""
    texts: list[str] = []
    owners: list[int] = []
    answer_positions: list[int] = []
    fixed: list[int] = []
    template = counter.template
    # The template's lookups, hoisted: this loop runs once per message of the dataset.
    per_message = template.per_message
    unknown_role = template.message(None)
    per_name = template.per_name
    for number, messages in enumerate(conversations):
        if not isinstance(messages, list) or not messages:
            fixed.append(0)
            continue
        overhead = template.per_conversation
        first = messages[0]
        if not (type(first) is dict and first.get("role") == "system"):
            overhead += template.implicit_system
        for message in messages:
            if type(message) is not dict:
                continue
            role = message.get("role")
            overhead += per_message.get(role, unknown_role) if type(role) is str else unknown_role
            content = message.get("content")
            if type(content) is str:
                texts.append(content)
                owners.append(number)
            name = message.get("name")
            if name is not None and type(name) is str:
                overhead += per_name
                texts.append(name)
                owners.append(number)
        last = messages[-1]
        if (
            type(last) is dict
            and last.get("role") == "assistant"
            and type(last.get("content")) is str
        ):
            # The answer is the last text appended for this conversation unless it had a name.
            answer_positions.append(len(texts) - (2 if type(last.get("name")) is str else 1))
        fixed.append(overhead)
    lengths = counter.lengths(texts)
    answer = np.zeros(len(conversations), dtype=np.int64)
    if answer_positions:
        positions = np.asarray(answer_positions, dtype=np.int64)
        answer[np.asarray(owners, dtype=np.int64)[positions]] = lengths[positions]
    text_totals = np.bincount(
        np.asarray(owners, dtype=np.int64), weights=lengths, minlength=len(conversations)
    ).astype(np.int64)
    prompt = np.asarray(fixed, dtype=np.int64) + text_totals - answer
    return ConversationTokens(prompt=prompt, answer=answer)


def shared_start_tokens(
    conversations: Sequence[object], counter: TokenCounter, *, counted: dict[str, int]
) -> int:
    """Tokens every one of ``conversations`` starts with, as count_conversations counts them:
    the messages before any reply that all of them begin with alike (a system prompt), with the
    chat format around them; with none alike, the default system prompt a template inserts
    where no conversation has its own. The format's tokens once a conversation are left out
    (OpenAI's are the reply's primer, at the end). Where a text ends and the next message's
    header starts, the tokenizer may share a few more. ``counted`` keeps the counts of the
    starts seen so far (by their JSON), for calls over many batches of one dataset."""
    if not conversations or not all(isinstance(c, list) and c for c in conversations):
        return 0
    lists = [c for c in conversations if isinstance(c, list)]
    first = lists[0]
    alike = 0
    while (
        alike < len(first)
        and type(first[alike]) is dict
        and first[alike].get("role") != "assistant"
        and all(len(other) > alike and other[alike] == first[alike] for other in lists[1:])
    ):
        alike += 1
    opening = _shared_opening([c[alike] if len(c) > alike else None for c in lists], counter)
    if alike:
        key = json.dumps(first[:alike], sort_keys=True)
        if key not in counted:
            start = int(count_conversations([first[:alike]], counter).total[0])
            counted[key] = start - counter.template.per_conversation
        return counted[key] + opening
    implicit = all(not (type(c[0]) is dict and c[0].get("role") == "system") for c in lists)
    return (counter.template.implicit_system if implicit else 0) + opening


def _shared_opening(messages: Sequence[object], counter: TokenCounter) -> int:
    """Tokens at the start of ``messages`` (each conversation's first message that differs)
    that are alike in all: the role's header where all have one role, and, before a reply, the
    whole words their texts begin with alike ("Subject:")."""
    if not all(type(message) is dict for message in messages):
        return 0
    dicts = [message for message in messages if type(message) is dict]
    roles = {message.get("role") for message in dicts}
    role = roles.pop() if len(roles) == 1 else None
    if not isinstance(role, str):
        return 0
    header = counter.template.per_header.get(role, 0)
    contents = [message.get("content") for message in dicts]
    if role == "assistant" or not all(type(content) is str for content in contents):
        return header  # a reply's tokens carry labels: they are never shared
    common = os.path.commonprefix([content for content in contents if type(content) is str])
    # Up to the last whole word: the tokens of a word cut short are not those of the word.
    words = common[: max(common.rfind(" "), common.rfind("\n"), 0)].rstrip()
    return header + (int(counter.lengths([words])[0]) if words else 0)


# -- local models: tokenizer.json and the chat template ---------------------------------------


def local_counter(model_dir: Path) -> TokenCounter:
    """The local model's tokenizer from ``model_dir/tokenizer.json`` (weights are not loaded)."""
    return _local_counter(str(Path(model_dir).resolve()))


@lru_cache(maxsize=4)
def _local_counter(model_dir: str) -> TokenCounter:
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise TokenizerUnavailable(f"no tokenizer at {path}; run `manage.py prepare_models`")
    tokenizer = Tokenizer.from_file(str(path))

    def encode_length(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    word_additive = _byte_level_without_prefix_space(path)
    template_path = Path(model_dir) / "chat_template.jinja"
    template = template_path.read_text() if template_path.is_file() else CHATML_TEMPLATE
    cost = measure_template_cost(template, encode_length)
    return TokenCounter(
        name=f"local:{Path(model_dir).name}",
        encode_length=encode_length,
        template=cost,
        word_additive=word_additive,
    )


def _byte_level_without_prefix_space(tokenizer_json: Path) -> bool:
    """Whether the tokenizer splits text the GPT-2 way (byte-level regex, no prefix space, no
    normalizer), the case in which counts add up over space-separated words."""
    config = json.loads(tokenizer_json.read_text())
    pre = config.get("pre_tokenizer") or {}
    return (
        config.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex") is True
        and pre.get("add_prefix_space") is False
        and not any(" " in token.get("content", "") for token in config.get("added_tokens", []))
    )


def render_chat_template(template: str, messages: list[dict[str, str]]) -> str:
    """Render a Hugging Face chat template the way transformers does, sandboxed."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TokenizerUnavailable(f"chat template refused the probe conversation: {message}")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template).render(
        messages=messages, add_generation_prompt=False, bos_token="", eos_token=""
    )


def measure_template_cost(template: str, encode_length: Callable[[str], int]) -> TemplateCost:
    """Measure how many tokens the template adds around each message.

    Rendering a conversation with and without one more message, and subtracting the tokens of
    that message's text, leaves the tokens of its role header and end marker.
    """
    probe = "probe"

    def tokens(messages: list[dict[str, str]]) -> int:
        return encode_length(render_chat_template(template, messages))

    system = {"role": "system", "content": probe}
    base = tokens([system])
    probe_tokens = encode_length(probe)
    per_message = {
        role: max(0, tokens([system, {"role": role, "content": probe}]) - base - probe_tokens)
        for role in CHAT_ROLES
    }
    per_message["system"] = max(0, base - probe_tokens)
    alone = tokens([{"role": "user", "content": probe}])
    implicit_system = max(0, alone - per_message["user"] - probe_tokens)
    system_alone = render_chat_template(template, [system])
    per_header = {}
    for role in CHAT_ROLES:
        rendered = render_chat_template(template, [system, {"role": role, "content": probe}])
        before = rendered[: rendered.rfind(probe)]
        if before.startswith(system_alone):
            per_header[role] = max(0, encode_length(before) - encode_length(system_alone))
    return TemplateCost(
        per_message=per_message, implicit_system=implicit_system, per_header=per_header
    )


# -- OpenAI models: tiktoken, offline ----------------------------------------------------------


def bundled_bpe_dir() -> Path:
    """Where litellm keeps its copies of tiktoken's BPE files, found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("the litellm package (for its bundled BPE files) is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


def tiktoken_encoding(name: str) -> Any:
    """A tiktoken Encoding built from the bundled BPE file; never touches the network."""
    return _tiktoken_encoding(name)


@lru_cache(maxsize=4)
def _tiktoken_encoding(name: str) -> Any:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    spec = TIKTOKEN_SPECS.get(name)
    if spec is None:
        known = ", ".join(TIKTOKEN_SPECS)
        raise TokenizerUnavailable(f"unknown tokenizer {name!r}; offline encodings: {known}")
    path = bundled_bpe_dir() / spec.bpe_file
    if not path.is_file():
        raise TokenizerUnavailable(f"the BPE file for {name} is missing: {path}")
    # tiktoken checks the hash only when it caches (not with TIKTOKEN_CACHE_DIR=""), so the
    # file is checked here too: a wrong or damaged file must never give wrong counts.
    if hashlib.sha256(path.read_bytes()).hexdigest() != spec.expected_hash:
        raise TokenizerUnavailable(f"Hash mismatch for {path}: not tiktoken's {name} ranks")
    ranks = load_tiktoken_bpe(str(path), expected_hash=spec.expected_hash)
    return tiktoken.Encoding(
        name=name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=spec.special_tokens,
    )


def tiktoken_counter(name: str) -> TokenCounter:
    encoding = tiktoken_encoding(name)
    # One text at a time: tiktoken's batch call hands texts to a thread pool, which measured
    # 2 to 4 times slower than this loop on a 2-core machine (bench/curation.py).
    encode = encoding.encode_ordinary

    def encode_length(text: str) -> int:
        return len(encode(text))

    # The cookbook's 3 per message come on top of the role's own tokens.
    cost = TemplateCost(
        per_message={
            role: OPENAI_TOKENS_PER_MESSAGE + len(encoding.encode_ordinary(role))
            for role in CHAT_ROLES
        },
        per_conversation=OPENAI_REPLY_PRIMING,
        per_name=OPENAI_TOKENS_PER_NAME,
    )
    # cl100k_base's and o200k_base's patterns only ever put a space at the start of a token.
    return TokenCounter(
        name=f"tiktoken:{name}", encode_length=encode_length, template=cost, word_additive=True
    )


def counter_for(*, tokenizer: str, model_dir: Path) -> TokenCounter:
    """The counter for a catalog entry: "" is the local model's own tokenizer."""
    return tiktoken_counter(tokenizer) if tokenizer else local_counter(model_dir)
