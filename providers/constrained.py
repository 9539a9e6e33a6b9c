"""Constrained decoding: local generation that can only write answers the contract allows.

A dataset's answer contract (plain JSON: a label set, a JSON Schema or a regular expression)
becomes an AnswerConstraint (providers.base), and the constraint a grammar for llguidance, a
maintained structured-generation library (a Rust parser with Python bindings, no other
dependencies). At every decoding step llguidance gives, per batch row, the set of tokens that
keep the row's text a prefix of some allowed answer; greedy_decode
(providers/local/generation.py) sets the logits of every other token to minus infinity before
it picks the next token, and tells the row's matcher which token was picked. The end-of-turn
token is in the set only where the text so far is a whole allowed answer, so a row stops only
on a complete answer (or at max_new_tokens, cut short).

Plain Python and llguidance, no Django: the evaluation app builds the constraint from the
dataset version's contract and hands it to ChatModel.generate_many.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from providers.base import AnswerConstraint, ProviderError

if TYPE_CHECKING:
    # Declared in the library's type stubs only.
    from llguidance._lib import JsonCompileOptions

# JSON answers are written with one space after ":" and ",", and no other whitespace. Free
# whitespace would let a small model pad its answer with newlines until max_new_tokens runs out,
# leaving the JSON unfinished; any spacing is equally valid JSON.
JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
BITS_PER_MASK_WORD = 32


def grammar_of(constraint: AnswerConstraint) -> str:
    """The constraint as an llguidance grammar."""
    if constraint.kind == "label_set":
        # One alternative per label, each a literal string (JSON escaping is what
        # llguidance's Lark syntax reads in string literals).
        alternatives = " | ".join(json.dumps(label) for label in constraint.labels)
        return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
    if constraint.kind == "json_schema":
        return llguidance.LLMatcher.grammar_from_json_schema(
            constraint.schema_json, overrides=JSON_LAYOUT
        )
    return llguidance.LLMatcher.grammar_from_regex(constraint.pattern)


@functools.lru_cache(maxsize=4)
def _llg_tokenizer(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_ids: tuple[int, ...]
) -> llguidance.LLTokenizer:
    # Building it reads the whole vocabulary (about 0.4 s for SmolLM2's 49k tokens): once per
    # loaded tokenizer. The stop tokens are what the grammar's end may be written as.
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ProviderError(
            f"constrained generation needs a fast tokenizer; {tokenizer.name_or_path} has none"
        )
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids))


@functools.cache
def _executor() -> llguidance.LLExecutor:
    # Its thread pool is made once per process.
    return llguidance.LLExecutor()


class TokenGuide:
    """A constraint compiled for one tokenizer; hands out one matcher per batch row."""

    def __init__(
        self,
        constraint: AnswerConstraint,
        tokenizer: PreTrainedTokenizerBase,
        *,
        vocab_size: int,
        stop_ids: Sequence[int],
    ) -> None:
        self.constraint = constraint
        self.vocab_size = vocab_size
        llg_tokenizer = _llg_tokenizer(tokenizer, vocab_size, tuple(stop_ids))
        grammar = grammar_of(constraint)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, llg_tokenizer
        )
        if is_error:
            raise ProviderError(
                f"cannot constrain generation to {constraint.describe()}: {messages[0]}"
            )
        # Rows start from copies of this matcher instead of compiling the grammar again.
        self._template = llguidance.LLMatcher(llg_tokenizer, grammar, log_level=0)
        if self._template.is_error():
            raise ProviderError(
                f"cannot constrain generation to {constraint.describe()}: "
                f"{self._template.get_error()}"
            )

    def start(self, rows: int) -> RowMatchers:
        return RowMatchers([self._template.deep_copy() for _ in range(rows)], self.vocab_size)


class RowMatchers:
    """The parser state of each row of one batch: which tokens may come next, row by row."""

    def __init__(self, matchers: list[llguidance.LLMatcher], vocab_size: int) -> None:
        self.matchers = matchers
        self.vocab_size = vocab_size
        words = (vocab_size + BITS_PER_MASK_WORD - 1) // BITS_PER_MASK_WORD
        self._bitmask = torch.zeros((len(matchers), words), dtype=torch.int32)
        self._executor = _executor()
        self._bit = torch.arange(BITS_PER_MASK_WORD, dtype=torch.int32)

    def allowed(self, rows: Sequence[int]) -> torch.Tensor:
        """(len(rows), vocab_size) booleans: the tokens each of these rows may write next.
        The masks are computed in parallel, in Rust threads."""
        llguidance.torch.fill_next_token_bitmask_par(
            self._executor,
            [(self.matchers[row], index) for index, row in enumerate(rows)],
            self._bitmask,
        )
        words = self._bitmask[: len(rows)]
        # Bit b of word w allows token 32 * w + b.
        bits = (words.unsqueeze(-1) >> self._bit) & 1
        return bits.reshape(len(rows), -1)[:, : self.vocab_size].bool()

    def mask_logits(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """The logits with every token these rows may not write next at minus infinity."""
        allowed = self.allowed(rows).to(logits.device)
        # Models may pad their output layer past the tokenizer's vocabulary: never allowed.
        width = logits.shape[-1]
        if width > self.vocab_size:
            allowed = torch.nn.functional.pad(allowed, (0, width - self.vocab_size))
        return logits.masked_fill(~allowed[:, :width], float("-inf"))

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Each row's matcher reads the token its row wrote."""
        for row, token in zip(rows, tokens, strict=True):
            matcher = self.matchers[row]
            if not matcher.consume_token(token) or matcher.is_error():
                raise ProviderError(
                    f"constrained decoding: row {row} wrote token {token}, which its grammar "
                    f"does not allow: {matcher.get_error()}"
                )
