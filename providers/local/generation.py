"""Generation with a local base model, or with a LoRA adapter applied on top: greedy, batched,
optionally constrained to an answer contract. The last few loaded models stay in memory, since
an evaluation generates with the same model more than once."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from providers.base import (
    AnswerConstraint,
    ChatResult,
    Conversation,
    Generation,
    OnResult,
    ProviderError,
)
from providers.constrained import TokenGuide

from .cpu_matmul import fastest_linear
from .encoding import render_chat, token_ids
from .label_scoring import LabelTrie, label_log_probs, label_sequences
from .loading import generation_dtype, load_base_model, load_tokenizer, pick_device

MODEL_CACHE_SIZE = 2

# --- generation ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_for_generation(
    base_model_dir: Path, adapter_dir: Path | None, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = load_base_model(base_model_dir, device, dtype=dtype)
    tokenizer = load_tokenizer(base_model_dir)
    if adapter_dir is not None:
        adapted = PeftModel.from_pretrained(model, adapter_dir)
        # Folding the adapter into the weights makes generation as fast as the base model.
        model = adapted.merge_and_unload()
    model.eval()
    # Decoder-only models continue from the last position, so prompts must end flush right.
    tokenizer.padding_side = "left"
    return model, tokenizer


class LocalChatModel:
    """Greedy generation with the base model, or with a LoRA adapter applied on top."""

    def __init__(
        self, base_model_dir: Path, adapter_dir: Path | None = None, device: str | None = None
    ) -> None:
        self.base_model_dir = base_model_dir.resolve()
        self.adapter_dir = adapter_dir.resolve() if adapter_dir is not None else None
        self.device = pick_device(device)

    def model_and_tokenizer(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model generate_batch uses (loaded on first use, then kept), and its tokenizer."""
        return _load_for_generation(
            self.base_model_dir, self.adapter_dir, self.device, generation_dtype(self.device)
        )

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        on_batch: Callable[[list[int], list[Generation]], None] | None = None,
        constraint: AnswerConstraint | None = None,
    ) -> list[Generation]:
        """One greedy reply per conversation, in input order.

        on_batch, if given, is called after each batch with the input indices it covered and
        their generations, so that a caller can save progress before the whole list is done.
        With a constraint, every reply is one the constraint allows, unless max_new_tokens cut
        it short (see providers.constraints).
        """
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        if max_new_tokens < 1:
            raise ProviderError("max_new_tokens must be at least 1")
        model, tokenizer = self.model_and_tokenizer()
        prompts = [
            token_ids(tokenizer, render_chat(tokenizer, list(c), add_generation_prompt=True))
            for c in conversations
        ]
        stop_ids = stop_token_ids(model, tokenizer, self.device)
        guide = None
        if constraint is not None:
            guide = TokenGuide(
                constraint,
                tokenizer,
                vocab_size=int(model.config.vocab_size),
                stop_ids=stop_ids.tolist(),
            )
        # Batching prompts of similar length wastes less compute on padding.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: dict[int, Generation] = {}
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = [prompts[i] for i in indices]
            completions = greedy_decode(
                model, batch, max_new_tokens, stop_ids, self.device, guide=guide
            )
            generations = [
                _to_generation(tokenizer, completion, len(prompt))
                for completion, prompt in zip(completions, batch, strict=True)
            ]
            results.update(zip(indices, generations, strict=True))
            if on_batch is not None:
                on_batch(indices, generations)
        return [results[index] for index in range(len(prompts))]

    def generate_many(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """The ChatModel protocol: the conversations in input order, ``batch_size`` at a
        time, each batch answered together (generate_batch) and then reported, so a caller
        can store a batch before the next one starts. A batch answers together, so each
        answer's latency is its share of the batch's time: what it cost here. Decoding is
        greedy, whatever the ``temperature``."""
        del temperature
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        results: list[ChatResult] = []
        for start in range(0, len(conversations), batch_size):
            if before_batch is not None:
                before_batch()
            batch = conversations[start : start + batch_size]
            began = time.monotonic()
            generations = self.generate_batch(
                batch, max_new_tokens=max_new_tokens, batch_size=batch_size, constraint=constraint
            )
            share = (time.monotonic() - began) / len(batch)
            for offset, generation in enumerate(generations):
                result = ChatResult(
                    text=generation.text,
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                    latency_seconds=share,
                    attempts=1,
                )
                results.append(result)
                if on_result is not None:
                    on_result(start + offset, result)
        return results

    def score_labels_many(
        self,
        conversations: Sequence[Conversation],
        labels: Sequence[str],
        *,
        batch_size: int = 8,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """The LabelScorer protocol: each conversation answered with the likeliest label (see
        providers.local.label_scoring), ``batch_size`` conversations a pass."""
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        if not labels:
            raise ProviderError("label scoring needs at least one label")
        model, tokenizer = self.model_and_tokenizer()
        stop_ids = stop_token_ids(model, tokenizer, self.device).tolist()
        sequences = label_sequences(tokenizer, labels, stop_ids)
        trie = LabelTrie.of(sequences)
        results: list[ChatResult] = []
        for start in range(0, len(conversations), batch_size):
            if before_batch is not None:
                before_batch()
            prompts = [
                token_ids(tokenizer, render_chat(tokenizer, list(c), add_generation_prompt=True))
                for c in conversations[start : start + batch_size]
            ]
            began = time.monotonic()
            with fastest_linear(model):
                scores = label_log_probs(model, prompts, trie, self.device)
            probabilities = torch.softmax(scores, dim=-1)
            best = probabilities.argmax(dim=-1).tolist()
            share = (time.monotonic() - began) / len(prompts)
            for offset, (prompt, choice) in enumerate(zip(prompts, best, strict=True)):
                result = ChatResult(
                    text=labels[choice],
                    prompt_tokens=len(prompt),
                    completion_tokens=len(sequences[choice]),
                    latency_seconds=share,
                    attempts=1,
                    confidence=float(probabilities[offset, choice]),
                )
                results.append(result)
                if on_result is not None:
                    on_result(start + offset, result)
        return results

    def close(self) -> None:
        """Nothing to release: the loaded model stays cached for the next one."""


def stop_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str
) -> torch.Tensor:
    # The tokens generate() stops at: the generation config's (one id or several), else the
    # tokenizer's end-of-sequence token.
    configured = model.generation_config.eos_token_id
    if configured is None:
        configured = tokenizer.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return torch.tensor(ids, dtype=torch.long, device=device)


# The KV cache grows by this many positions at a time, so that most decoding steps write into
# room already there instead of copying the whole cache (as torch.cat would, every step).
KV_CACHE_GROWTH = 64


class GrowingKVLayer(DynamicLayer):
    """One layer's KV cache in a buffer with spare room; keys and values are views of its start."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
        self.value_buffer = value_states.new_empty(
            (*value_states.shape[:2], 0, value_states.shape[3])
        )
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[2]
        if end > self.key_buffer.shape[2]:
            self._grow(end + KV_CACHE_GROWTH)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        return self._expose()

    def _grow(self, capacity: int) -> None:
        def grown(buffer: torch.Tensor) -> torch.Tensor:
            larger = buffer.new_empty((*buffer.shape[:2], capacity, buffer.shape[3]))
            larger[:, :, : self.length] = buffer[:, :, : self.length]
            return larger

        self.key_buffer = grown(self.key_buffer)
        self.value_buffer = grown(self.value_buffer)

    def _expose(self) -> tuple[torch.Tensor, torch.Tensor]:
        # DynamicLayer's own methods (get_seq_length, the mask sizes) read keys and values.
        keys = self.keys = self.key_buffer[:, :, : self.length]
        values = self.values = self.value_buffer[:, :, : self.length]
        return keys, values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._expose()


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one token of its own.

    Chat prompts usually start alike (the template's system prompt), so the shared part is run
    through the model once and its KV cache copied to every row. Each prompt keeps at least its
    last token, since its first generated token is predicted from there.
    """
    limit = min(len(prompt) for prompt in prompts) - 1
    first = prompts[0]
    for position in range(limit):
        if any(prompt[position] != first[position] for prompt in prompts):
            return position
    return max(limit, 0)


@dataclass
class _DecodingState:
    """The rows still being decoded, with what each next step needs about them."""

    rows: list[int]  # index into the batch of each live row
    cache: Cache
    attention_mask: torch.Tensor  # (live rows, cached positions)
    next_positions: torch.Tensor  # (live rows,) position id of the token each row feeds next

    def keep(self, live: torch.Tensor) -> None:
        """Drops the rows that finished, so that later steps compute only for the others."""
        kept = live.nonzero().squeeze(1)
        self.rows = [self.rows[index] for index in kept.tolist()]
        self.cache.batch_select_indices(kept)
        self.attention_mask = self.attention_mask[kept]
        self.next_positions = self.next_positions[kept]


def _prefill(
    model: PreTrainedModel, prompts: Sequence[Sequence[int]], device: str
) -> tuple[torch.Tensor, _DecodingState]:
    """Runs the prompts through the model: the next-token logits of each, and the state after.

    The shared prefix runs once; the rest of each prompt is left-padded, so that all rows end
    flush right, giving per row the layout [shared prefix][padding][own tokens]. The padding is
    masked out and position ids count only real tokens, so every row sees exactly what it would
    see alone, unpadded.
    """
    batch = len(prompts)
    prefix = shared_prefix_length(prompts)
    cache = Cache(layer_class_to_replicate=GrowingKVLayer)
    if prefix:
        model(
            input_ids=torch.tensor([prompts[0][:prefix]], device=device),
            position_ids=torch.arange(prefix, device=device).unsqueeze(0),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(batch)
    width = max(len(prompt) for prompt in prompts) - prefix
    # Padding positions hold token 0; they are masked, so which token it is does not matter.
    input_ids = torch.zeros((batch, width), dtype=torch.long)
    attention_mask = torch.zeros((batch, prefix + width), dtype=torch.long)
    attention_mask[:, :prefix] = 1
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        own = prompt[prefix:]
        input_ids[row, width - len(own) :] = torch.tensor(own)
        attention_mask[row, prefix + width - len(own) :] = 1
        position_ids[row, width - len(own) :] = torch.arange(prefix, len(prompt))
    attention_mask = attention_mask.to(device)
    output = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask,
        position_ids=position_ids.to(device),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,  # only the last position's logits are needed, not the prompt's
    )
    lengths = torch.tensor([len(prompt) for prompt in prompts], device=device)
    state = _DecodingState(list(range(batch)), cache, attention_mask, lengths)
    return output.logits[:, -1], state


def greedy_decode(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: torch.Tensor,
    device: str,
    *,
    guide: TokenGuide | None = None,
) -> list[list[int]]:
    """Greedy continuations of a batch of prompts, each up to and including its stop token.

    With a guide, each row picks its greedy token among those its grammar allows at that step
    (the others' logits masked out), so each row writes an answer the constraint allows; without
    one, nothing is masked and nothing else changes.

    The same tokens as model.generate(do_sample=False) on each prompt alone. At batch 32 on
    CPU nearly all the time goes to the model's matrix products, so what this loop saves over
    a batched generate() is work generate() cannot skip: the prompts' shared prefix computed
    once instead of once per row (about half of the prompt compute for chat prompts with the
    template's system prompt), the KV cache written in place instead of copied every step,
    and rows that stopped dropped from the batch instead of decoded on until the longest ends.
    On CPU the products themselves run through oneDNN where that is measured faster (see
    providers.local.cpu_matmul).
    """
    completions: list[list[int]] = [[] for _ in prompts]
    if not prompts:
        return completions
    matchers = guide.start(len(prompts)) if guide is not None else None
    with torch.inference_mode(), fastest_linear(model):
        logits, state = _prefill(model, prompts, device)
        for step in range(max_new_tokens):
            if matchers is not None:
                logits = matchers.mask_logits(logits, state.rows)
            tokens = logits.argmax(dim=-1)
            picked = tokens.tolist()
            for row, token in zip(state.rows, picked, strict=True):
                completions[row].append(token)
            if matchers is not None:
                matchers.advance(state.rows, picked)
            live = ~torch.isin(tokens, stop_ids)
            if step == max_new_tokens - 1 or not bool(live.any()):
                break
            if not bool(live.all()):
                state.keep(live)
                tokens = tokens[live]
            ones = state.attention_mask.new_ones((len(state.rows), 1))
            state.attention_mask = torch.cat([state.attention_mask, ones], dim=1)
            logits = model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=state.attention_mask,
                position_ids=state.next_positions.unsqueeze(1),
                cache=state.cache,
                use_cache=True,
            ).logits[:, -1]
            state.next_positions = state.next_positions + 1
    return completions


def _to_generation(
    tokenizer: PreTrainedTokenizerBase, new_tokens: list[int], prompt_tokens: int
) -> Generation:
    # Decoding stops at the end-of-turn token; count up to and including that token, which the
    # model did generate.
    completion = new_tokens
    if tokenizer.eos_token_id in new_tokens:
        completion = new_tokens[: new_tokens.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(completion, skip_special_tokens=True)
    if not isinstance(text, str):
        raise ProviderError("the tokenizer decoded one sequence into several texts")
    return Generation(
        text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=len(completion)
    )
