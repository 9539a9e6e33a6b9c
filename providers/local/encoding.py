"""Training data for the local provider: conversations rendered with the model's chat template
and tokenized so that only assistant replies carry labels, collated into padded or packed
batches, and the seeded order of the batches over the epochs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from providers.base import Conversation, ProviderError, TrainingConfig
from providers.batching import (
    computed_tokens,
    epoch_batch_order,
    pack_rows,
    shares_prefix,
)

IGNORED_LABEL = -100  # cross_entropy's ignore_index: these positions add nothing to the loss


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, *, add_generation_prompt: bool
) -> str:
    if not tokenizer.chat_template:
        raise ProviderError(
            f"the tokenizer of {tokenizer.name_or_path} has no chat template to render "
            "conversations with"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):
        raise ProviderError("the tokenizer's chat template did not render to text")
    return text


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


# --- training data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORED_LABEL)


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, max_seq_len: int
) -> EncodedExample:
    """Tokenize a conversation so that only assistant replies carry labels.

    The text is tokenized piece by piece (prompt, reply, prompt, reply...) rather than whole:
    at generation time the prompt is tokenized on its own and the reply is appended token by
    token, so training on the same split keeps the two consistent at the boundary.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(conversation):
        if message.get("role") != "assistant":
            continue
        if index == 0:
            raise ProviderError("a training conversation starts with an assistant message")
        prompt = render_chat(tokenizer, conversation[:index], add_generation_prompt=True)
        with_reply = render_chat(tokenizer, conversation[: index + 1], add_generation_prompt=False)
        if not prompt.startswith(rendered) or not with_reply.startswith(prompt):
            raise ProviderError("the chat template does not render conversations prefix-stably")
        prompt_ids = token_ids(tokenizer, prompt[len(rendered) :])
        reply_ids = token_ids(tokenizer, with_reply[len(prompt) :])
        # OpenAI's format lets a reply carry weight 0: it stays as context but is not learned.
        learned = str(message.get("weight", 1)) != "0"
        input_ids += prompt_ids + reply_ids
        labels += [IGNORED_LABEL] * len(prompt_ids)
        labels += reply_ids if learned else [IGNORED_LABEL] * len(reply_ids)
        rendered = with_reply
    return EncodedExample(input_ids[:max_seq_len], labels[:max_seq_len])


def training_set_fingerprint(examples: Sequence[EncodedExample]) -> str:
    """Identifies the encoded training set, so a checkpoint is never resumed on other data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    # Padded batches mark their padding here; packed ones have none and restart position_ids
    # at 0 for each example instead, and a batch that shares its prefix has none either (its
    # mask is made from row_examples when it runs: loss.batch_forward).
    attention_mask: torch.Tensor | None
    labels: torch.Tensor
    position_ids: torch.Tensor | None = None
    # Tokens of the examples that the model runs (padding left out): fewer than the examples
    # hold when their shared prefix runs once. None: as many as the examples hold.
    computed_tokens: int | None = None
    # The batch's shared prefix, shaped (1, length), where it runs once before the rows: its
    # keys and values are copied to every row (loss.batch_forward), and the rows hold the rest.
    prefix_ids: torch.Tensor | None = None
    # With prefix_ids: which example of its row each position belongs to (0, 1, ...; the
    # padding at a row's end is a number of its own), so that each sees only its own example
    # and the prefix.
    row_examples: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, Any]:
        # A KV cache would make transformers skip the packed-sequence check (it assumes
        # generation) and let packed examples attend to each other; training never needs one.
        inputs: dict[str, Any] = {"input_ids": self.input_ids, "use_cache": False}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs


Collate = Callable[[Sequence[EncodedExample], int, str], Batch]


def collate(examples: Sequence[EncodedExample], pad_token_id: int, device: str) -> Batch:
    """One example per row, right-padded to the longest."""
    # Right padding is fine for training; labels mask the padding, not the pad id, because this
    # tokenizer pads with its end-of-turn token, which replies must still learn to produce.
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORED_LABEL, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(example.labels)
    return Batch(input_ids.to(device), attention_mask.to(device), labels.to(device))


def collate_packed(examples: Sequence[EncodedExample], pad_token_id: int, device: str) -> Batch:
    """Several examples per row (see pack_rows), each attending only to itself.

    Without an attention mask, transformers reads position_ids that restart at 0 as the start
    of a new sequence and gives the row a block-diagonal causal mask; the padding at a row's end
    restarts too, so it forms a segment of its own that no example sees. packing_is_exact
    checks that a model honours this before training relies on it.
    """
    rows = pack_rows([len(example.input_ids) for example in examples])
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORED_LABEL, dtype=torch.long)
    for row, members in enumerate(rows):
        start = 0
        for member in members:
            example = examples[member]
            end = start + len(example.input_ids)
            input_ids[row, start:end] = torch.tensor(example.input_ids)
            position_ids[row, start:end] = torch.arange(end - start)
            labels[row, start:end] = torch.tensor(example.labels)
            # The previous example's last position must not learn to predict this first token
            # (unpacked, nothing predicts a first token).
            labels[row, start] = IGNORED_LABEL
            start = end
        position_ids[row, start:] = torch.arange(width - start)
    return Batch(
        input_ids.to(device), None, labels.to(device), position_ids=position_ids.to(device)
    )


def shared_prefix_length(examples: Sequence[EncodedExample]) -> int:
    """How many leading tokens every example of the batch has in common and can share: at most
    up to the token before each example's first labelled token (the token after the prefix is
    predicted by the prefix's last position, which can stand for all examples only when none
    learns it), and leaving each example at least one token of its own."""
    first = examples[0].input_ids
    limit = min(len(example.input_ids) - 1 for example in examples)
    for example in examples:
        labelled = (i for i, label in enumerate(example.labels) if label != IGNORED_LABEL)
        limit = min(limit, next(labelled, len(example.labels)) - 1)
    length = 0
    while length < limit and all(other.input_ids[length] == first[length] for other in examples):
        length += 1
    return length


def collate_sharing_prefix(
    examples: Sequence[EncodedExample], pad_token_id: int, device: str, *, pack_rests: bool = True
) -> Batch:
    """A batch that runs its examples' shared prefix once (a system prompt that every example
    starts with is often a third or more of its tokens), then each example's rest, packed
    several to a row as collate_packed packs whole examples, continuing from the prefix's keys
    and values.

    ``prefix_ids`` is the prefix; the rows hold the rests, each with the positions it has alone
    (counting on from the prefix) and its number in the row in ``row_examples``. Each position
    attends to the prefix and causally to its own example (loss.batch_forward builds that
    mask), as in generation from a KV cache, so its logits are those it gets alone; the loss is
    the same sum, with the prefix's share of the gradient added up once instead of computed
    per example. Packing instead of one rest a row matters when lengths differ: a batch of
    rests from 148 to 451 tokens padded to the longest ran 1.8 times the tokens it held.
    Batches that providers.batching.shares_prefix turns down are packed as collate_packed does.
    With ``pack_rests`` False, or where no two rests fit a row, each rest has a row of its own
    and the batch no ``row_examples``: the model makes its own causal mask, which is what
    models with sliding-window attention need (the mask made here has no window).
    prefix_sharing_is_exact (loss.py) checks whether a model honours the layout;
    bench/shared_prefix.py measures a training step in it against collate_packed.
    """
    prefix = shared_prefix_length(examples)
    if not shares_prefix(len(examples), prefix):
        return collate_packed(examples, pad_token_id, device)
    rests = [len(example.input_ids) - prefix for example in examples]
    rows = pack_rows(rests) if pack_rests else [[member] for member in range(len(examples))]
    width = max(rests)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORED_LABEL, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    row_examples = torch.zeros((len(rows), width), dtype=torch.long)
    for row, members in enumerate(rows):
        start = 0
        for number, member in enumerate(members):
            example = examples[member]
            end = start + rests[member]
            input_ids[row, start:end] = torch.tensor(example.input_ids[prefix:])
            labels[row, start:end] = torch.tensor(example.labels[prefix:])
            # What predicts a rest's first token is the prefix's last position, which no row
            # runs (shared_prefix_length leaves that token unlabelled), or the end of the
            # example before it in the row, which must not learn it.
            labels[row, start] = IGNORED_LABEL
            position_ids[row, start:end] = torch.arange(prefix, prefix + rests[member])
            row_examples[row, start:end] = number
            start = end
        # The padding at the row's end: a sequence of its own that no example sees.
        position_ids[row, start:] = torch.arange(prefix, prefix + width - start)
        row_examples[row, start:] = len(members)
    return Batch(
        input_ids.to(device),
        None,
        labels.to(device),
        position_ids=position_ids.to(device),
        computed_tokens=computed_tokens(prefix, [len(example.input_ids) for example in examples]),
        prefix_ids=torch.tensor([examples[0].input_ids[:prefix]], device=device),
        row_examples=row_examples.to(device) if len(rows) < len(examples) else None,
    )


def input_tokens(examples: Sequence[EncodedExample]) -> int:
    """Non-padding input tokens: what throughput counts, here and in the benchmark's baseline."""
    return sum(len(example.input_ids) for example in examples)


# --- batch order --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataPosition:
    """Where the next batch comes from: its epoch, that epoch's batches, and which one is next."""

    epoch: int
    epoch_batches: list[list[int]]
    next_batch: int

    @staticmethod
    def start(lengths: Sequence[int], config: TrainingConfig) -> DataPosition:
        return DataPosition(0, epoch_batch_order(lengths, config.batch_size, config.seed, 0), 0)

    def take(
        self, lengths: Sequence[int], config: TrainingConfig
    ) -> tuple[list[int], DataPosition]:
        """The next batch's example indices, and the position after it."""
        position = self
        if position.next_batch == len(position.epoch_batches):
            epoch = position.epoch + 1
            order = epoch_batch_order(lengths, config.batch_size, config.seed, epoch)
            position = DataPosition(epoch, order, 0)
        batch = position.epoch_batches[position.next_batch]
        return batch, dataclasses.replace(position, next_batch=position.next_batch + 1)
