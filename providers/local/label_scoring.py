"""Scoring a label set instead of generating: every label ranked by the model's probability of
writing it after the prompt.

A label's score is log P(label tokens, then the end-of-turn token | prompt), the sum of its
tokens' log-probabilities under the full vocabulary, so "card" and "card_lost" are told apart by
the end-of-turn token. Softmax over the labels' scores gives each label's probability among the
labels: the answer is the likeliest label, and its probability is the answer's confidence.

The labels share their first tokens ("card_", "transfer_"), so they are laid out as a trie, and
each prompt is followed by the trie's nodes in one forward pass: a node attends to the prompt and
to its own ancestors only (a 4-D attention mask) and sits at the position its depth gives, so it
sees exactly what it would see at the end of the prompt followed by its label's earlier tokens.
One pass per batch of prompts scores every label; the output head (a fifth of the model's work
per token for SmolLM2) runs only where a next token is scored: the prompt's last position and
the trie's inner nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from providers.base import ProviderError

from .encoding import render_chat, token_ids


@dataclass(frozen=True)
class LabelTrie:
    """The labels' token sequences merged on shared prefixes. Nodes are listed parents first."""

    tokens: tuple[int, ...]  # each node's token
    parents: tuple[int, ...]  # each node's parent node, -1 for a first token
    depths: tuple[int, ...]  # 0 for a first token
    label_paths: tuple[tuple[int, ...], ...]  # each label's nodes, first token first

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]]) -> LabelTrie:
        """The trie of ``sequences`` (one per label, each ending in the end-of-turn token)."""
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        children: dict[tuple[int, int], int] = {}
        paths: list[tuple[int, ...]] = []
        for sequence in sequences:
            if not sequence:
                raise ValueError("every label needs at least one token")
            parent = -1
            path: list[int] = []
            for depth, token in enumerate(sequence):
                node = children.get((parent, token))
                if node is None:
                    node = len(tokens)
                    children[(parent, token)] = node
                    tokens.append(token)
                    parents.append(parent)
                    depths.append(depth)
                path.append(node)
                parent = node
            paths.append(tuple(path))
        if len(set(paths)) != len(paths):
            raise ValueError("two labels have the same tokens")
        return cls(tuple(tokens), tuple(parents), tuple(depths), tuple(paths))

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestry(self) -> torch.Tensor:
        """(nodes, nodes) bool: row i is true at i and at each of i's ancestors."""
        size = len(self.tokens)
        seen = torch.eye(size, dtype=torch.bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                # Parents come first, so the parent's row is already complete.
                seen[node] |= seen[parent]
        return seen

    def inner_nodes(self) -> list[int]:
        """The nodes some other node continues from, in node order."""
        return sorted({parent for parent in self.parents if parent >= 0})

    def path_matrix(self) -> torch.Tensor:
        """(nodes, labels) float: 1 where the node is on the label's path."""
        matrix = torch.zeros((len(self.tokens), len(self.label_paths)))
        for label, path in enumerate(self.label_paths):
            matrix[list(path), label] = 1.0
        return matrix


def label_sequences(
    tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], stop_ids: Sequence[int]
) -> list[list[int]]:
    """Each label's tokens as the chat template writes it for the assistant, up to and
    including the end-of-turn token: what training taught the model to write."""
    asked = [{"role": "user", "content": "?"}]
    prompt = render_chat(tokenizer, asked, add_generation_prompt=True)
    sequences = []
    for label in labels:
        reply = [*asked, {"role": "assistant", "content": label}]
        written = render_chat(tokenizer, reply, add_generation_prompt=False)
        if not written.startswith(prompt):
            raise ProviderError("the chat template does not render conversations prefix-stably")
        tokens = token_ids(tokenizer, written[len(prompt) :])
        ends = [index for index, token in enumerate(tokens) if token in stop_ids]
        if not ends:
            raise ProviderError(f"the chat template writes no end-of-turn token after {label!r}")
        sequences.append(tokens[: ends[0] + 1])
    return sequences


@dataclass(frozen=True)
class _Layout:
    """A batch of prompts, each followed by the trie, as the model's inputs."""

    input_ids: torch.Tensor  # (batch, width + nodes)
    position_ids: torch.Tensor  # (batch, width + nodes)
    attention_mask: torch.Tensor  # (batch, 1, width + nodes, width + nodes) bool, true = attend
    width: int  # prompt columns; prompts are left-padded to end flush at width - 1


def _layout(prompts: Sequence[Sequence[int]], trie: LabelTrie, device: str) -> _Layout:
    batch = len(prompts)
    width = max(len(prompt) for prompt in prompts)
    nodes = len(trie)
    total = width + nodes
    input_ids = torch.zeros((batch, total), dtype=torch.long)
    position_ids = torch.zeros((batch, total), dtype=torch.long)
    real = torch.zeros((batch, total), dtype=torch.bool)
    depths = torch.tensor(trie.depths, dtype=torch.long)
    input_ids[:, width:] = torch.tensor(trie.tokens, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) : width] = torch.tensor(prompt, dtype=torch.long)
        position_ids[row, width - len(prompt) : width] = torch.arange(len(prompt))
        position_ids[row, width:] = len(prompt) + depths
        real[row, width - len(prompt) :] = True
    mask = torch.zeros((batch, total, total), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    # A prompt position sees the real prompt positions up to itself; a node sees the whole real
    # prompt and its own ancestors. Every row also sees itself, so that a padding row is never
    # all masked (which gives NaN in attention); padding rows are never read.
    mask[:, :width, :width] = causal & real[:, None, :width]
    mask[:, width:, :width] = real[:, None, :width]
    mask[:, width:, width:] = trie.ancestry()
    mask |= torch.eye(total, dtype=torch.bool)
    return _Layout(
        input_ids=input_ids.to(device),
        position_ids=position_ids.to(device),
        attention_mask=mask.unsqueeze(1).to(device),
        width=width,
    )


def label_log_probs(
    model: PreTrainedModel, prompts: Sequence[Sequence[int]], trie: LabelTrie, device: str
) -> torch.Tensor:
    """(prompts, labels): log P(label's tokens | prompt) of every label after every prompt."""
    layout = _layout(prompts, trie, device)
    inner = trie.inner_nodes()
    # Where each node's token is predicted from: the prompt's last position for a first token,
    # else its parent's column.
    sources = [layout.width - 1] + [layout.width + node for node in inner]
    source_of = {-1: 0} | {node: index + 1 for index, node in enumerate(inner)}
    node_source = torch.tensor([source_of[parent] for parent in trie.parents], device=device)
    node_token = torch.tensor(trie.tokens, device=device)
    with torch.inference_mode():
        hidden = model.get_decoder()(
            input_ids=layout.input_ids,
            position_ids=layout.position_ids,
            attention_mask=layout.attention_mask,
            use_cache=False,
        ).last_hidden_state
        head = model.get_output_embeddings()
        logits = head(hidden[:, sources]).float()
        log_probs = torch.log_softmax(logits, dim=-1)
        per_node = log_probs[:, node_source, node_token]  # (batch, nodes)
        return per_node @ trie.path_matrix().to(device)
