"""What makes local training fast gives the same loss as the plain computation (real model)."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CohereConfig,
    CohereForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from providers.base import Conversation
from providers.batching import (
    BATCHES_PER_LENGTH_GROUP,
    MIN_SHARED_PREFIX,
    epoch_batch_order,
    pack_rows,
)
from providers.local.encoding import (
    IGNORED_LABEL,
    Batch,
    EncodedExample,
    collate,
    collate_packed,
    collate_sharing_prefix,
    encode_for_training,
    shared_prefix_length,
)
from providers.local.loss import (
    LabelledPositionLoss,
    after_the_prefix_mask,
    collate_for,
    packing_is_exact,
    predicting_positions,
    prefix_sharing_is_exact,
    summed_token_loss,
    token_loss_for,
)
from providers.local.weights import ensure_base_model

SYSTEM = "Classify the support ticket. Answer with JSON."


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("FTPORTAL_MODEL_CACHE")
    cache = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    return ensure_base_model(cache)


def lora_model(base_model_dir: Path, attention: str = "sdpa") -> PeftModel:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=torch.float32, local_files_only=True, attn_implementation=attention
    )
    model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    assert isinstance(model, PeftModel)
    # LoRA starts as a no-op (B = 0); give B weights so the adapter shapes the loss and both
    # LoRA matrices get gradients worth comparing.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
    return model


def assert_close_relative_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal up to rounding: kernels that mask attention differently round differently, which
    an element-wise rtol exaggerates on gradients near zero."""
    error = float((actual - expected).abs().max())
    scale = float(expected.abs().max())
    assert scale > 0, f"{name} has no gradient to compare"
    assert error <= 1e-4 * scale, f"{name}: off by {error:.3g} at scale {scale:.3g}"


def assert_same_loss_and_gradients(
    model: PeftModel, padded: Batch, candidate: Batch, examples: list[EncodedExample]
) -> None:
    """The fast loss on `candidate` gives the plain loss of one padded example a row, with the
    same count of labelled tokens and the same LoRA gradients up to rounding."""
    model.train()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    plain_loss, plain_count = summed_token_loss(model, padded)
    plain_loss.backward()
    plain_grads = {name: p.grad.clone() for name, p in trainable.items() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    fast_loss, fast_count = token_loss_for(model, "cpu")(candidate)
    fast_loss.backward()

    assert fast_count == plain_count == sum(example.supervised_tokens for example in examples)
    assert torch.allclose(fast_loss, plain_loss, rtol=1e-5)
    for name, parameter in trainable.items():
        assert parameter.grad is not None
        assert_close_relative_to_scale(parameter.grad, plain_grads[name], name)


def mixed_conversations() -> list[Conversation]:
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Charged twice."},
            {"role": "assistant", "content": '{"label": "billing"}'},
        ],
        [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": "The app crashes every time I open the settings page. " * 4,
            },
            {"role": "assistant", "content": '{"label": "bug", "priority": "high"}'},
        ],
        [
            {"role": "user", "content": "My invoice is wrong."},
            {"role": "assistant", "content": "billing", "weight": 0},  # type: ignore[dict-item]
            {"role": "user", "content": "And the export is empty."},
            {"role": "assistant", "content": "bug"},
        ],
    ]


def test_predicting_positions_are_those_followed_by_a_label() -> None:
    labels = torch.tensor(
        [
            [IGNORED_LABEL, IGNORED_LABEL, 7, 8],
            [IGNORED_LABEL, 5, IGNORED_LABEL, IGNORED_LABEL],
        ]
    )

    positions, targets = predicting_positions(labels)

    # Row 0 predicts 7 at column 1 and 8 at column 2; row 1 predicts 5 at column 0 (flat 4).
    assert positions.tolist() == [1, 2, 4]
    assert targets.tolist() == [7, 8, 5]


def test_labelled_position_loss_and_gradients_equal_the_plain_computation(
    base_model_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    examples = [encode_for_training(tokenizer, c, 512) for c in mixed_conversations()]
    assert len({len(example.input_ids) for example in examples}) == 3  # padding is exercised
    batch = collate(examples, int(tokenizer.pad_token_id), "cpu")
    model = lora_model(base_model_dir)
    assert isinstance(token_loss_for(model, "cpu"), LabelledPositionLoss)
    assert_same_loss_and_gradients(model, batch, batch, examples)


def test_pack_rows_places_every_example_once_within_the_longest_length() -> None:
    lengths = [50, 10, 30, 20, 45, 5, 25]

    rows = pack_rows(lengths)

    assert sorted(index for row in rows for index in row) == list(range(len(lengths)))
    assert all(sum(lengths[index] for index in row) <= max(lengths) for row in rows)
    assert len(rows) == 4  # 185 tokens need at least 4 rows of 50


def test_packed_rows_give_the_same_loss_and_gradients_as_one_example_per_row(
    base_model_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    conversations = [*mixed_conversations(), mixed_conversations()[0]]
    examples = [encode_for_training(tokenizer, c, 512) for c in conversations]
    pad_token_id = int(tokenizer.pad_token_id)
    padded = collate(examples, pad_token_id, "cpu")
    packed = collate_packed(examples, pad_token_id, "cpu")
    assert packed.input_ids.size(0) < len(examples)  # some row holds several examples
    model = lora_model(base_model_dir)
    assert packing_is_exact(model, "cpu")
    assert_same_loss_and_gradients(model, padded, packed, examples)


def ticket(text: str, answer: str) -> Conversation:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": answer},
    ]


def test_the_shared_prefix_stops_before_any_token_an_example_learns() -> None:
    ignored = [IGNORED_LABEL] * 6
    same_start = [1, 2, 3, 4, 5, 6]
    # The same up to their last token, which both learn: the position before it must stay each
    # example's own, since it predicts a different label in each.
    twins = [
        EncodedExample([*same_start, 7], [*ignored, 7]),
        EncodedExample([*same_start, 8], [*ignored, 8]),
    ]
    assert shared_prefix_length(twins) == 5
    # Where the examples part comes first, the prefix ends there.
    parting = [
        EncodedExample([1, 2, 3, 9, 9, 9, 9], [*ignored, 9]),
        EncodedExample([1, 2, 3, 8, 8, 8, 8], [*ignored, 8]),
    ]
    assert shared_prefix_length(parting) == 3
    # Different from the first token: nothing is shared.
    assert shared_prefix_length([EncodedExample([0, 1], [IGNORED_LABEL, 1]), twins[0]]) == 0
    # An example that is the start of another keeps a token of its own.
    nested = [EncodedExample(same_start[:4], [IGNORED_LABEL] * 4), twins[0]]
    assert shared_prefix_length(nested) == 3


# Fused attention takes a boolean mask; eager attention adds a float one to its scores.
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_batch_sharing_its_system_prompt_gives_the_loss_and_gradients_of_padded_rows(
    base_model_dir: Path, attention: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    texts = ["Charged twice.", "The app crashes on the settings page. " * 3, "Cannot log in."]
    conversations = [ticket(text, '{"label": "other"}') for text in texts * 3]
    examples = [encode_for_training(tokenizer, c, 512) for c in conversations]
    pad_token_id = int(tokenizer.pad_token_id)
    model = lora_model(base_model_dir, attention)
    # The layout the trainer picks for this model.
    layout, collate_shared = collate_for(model, "cpu")
    assert layout == "sharing its prefix"
    shared = collate_shared(examples, pad_token_id, "cpu")
    prefix = shared_prefix_length(examples)
    # The system prompt and the chat template around it, run once, not 9 times.
    assert prefix >= MIN_SHARED_PREFIX
    assert shared.prefix_ids is not None and shared.prefix_ids.shape == (1, prefix)
    # The nine rests packed into fewer rows: the short ones share rows.
    assert shared.input_ids.size(0) < 9
    assert shared.computed_tokens == sum(len(e.input_ids) for e in examples) - 8 * prefix
    padded = collate(examples, pad_token_id, "cpu")
    assert_same_loss_and_gradients(model, padded, shared, examples)
    # The plain loss (for models whose head the shortcut cannot call) runs the prefix too.
    model.eval()
    with torch.no_grad():
        plain, plain_count = summed_token_loss(model, padded)
        on_shared, shared_count = summed_token_loss(model, shared)
    assert shared_count == plain_count
    assert torch.allclose(on_shared, plain, rtol=1e-5)


def test_a_batch_sharing_its_prefix_runs_it_once_and_packs_the_rests_into_rows() -> None:
    prefix = list(range(1, 21))
    ignored = [IGNORED_LABEL] * len(prefix)

    def example(length: int, token: int) -> EncodedExample:
        return EncodedExample(prefix + [token] * length, ignored + [token] * length)

    examples = [example(900, 200), example(30, 201), example(600, 202)]
    # The prefix's last token predicts each example's first label, so it stays each one's own.
    assert shared_prefix_length(examples) == 19
    shared = collate_sharing_prefix(examples, 0, "cpu")
    assert shared.prefix_ids is not None and shared.prefix_ids.tolist() == [prefix[:19]]
    # Rows as wide as the longest rest (never wider than the longest example); the two shorter
    # rests (601 and 31 tokens) share the second row.
    assert shared.input_ids.shape == (2, 901)
    assert shared.computed_tokens == 19 + 901 + 31 + 601
    assert shared.attention_mask is None
    assert shared.position_ids is not None and shared.row_examples is not None
    assert shared.input_ids[0].tolist() == [20] + [200] * 900
    assert shared.input_ids[1, :601].tolist() == [20] + [202] * 600
    assert shared.input_ids[1, 601:632].tolist() == [20] + [201] * 30
    assert shared.input_ids[1, 632:].eq(0).all()
    # Each rest counts its positions on from the prefix, as it would alone.
    assert shared.position_ids[0].tolist() == list(range(19, 920))
    assert shared.position_ids[1, :601].tolist() == list(range(19, 620))
    assert shared.position_ids[1, 601:632].tolist() == list(range(19, 50))
    # Numbered within the row, the padding at its end a number of its own.
    assert shared.row_examples[0].eq(0).all()
    assert shared.row_examples[1, :601].eq(0).all()
    assert shared.row_examples[1, 601:632].eq(1).all()
    assert shared.row_examples[1, 632:].eq(2).all()
    # A rest's first token is predicted by the prefix's last position, which no row runs, or
    # by the end of the example before it in the row: neither learns it.
    assert shared.labels[:, 0].eq(IGNORED_LABEL).all()
    assert shared.labels[1, 601] == IGNORED_LABEL
    assert shared.labels[1, 1:601].tolist() == [202] * 600
    assert shared.labels[1, 602:632].tolist() == [201] * 30
    assert shared.labels[1, 632:].eq(IGNORED_LABEL).all()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_rests_packed_after_a_prefix_see_the_prefix_and_their_own_example(attention: str) -> None:
    # One row: a prefix of 2, then an example of 2 tokens, one of 1, and a padding position.
    row_examples = torch.tensor([[0, 0, 1, 2]])
    config = SimpleNamespace(_attn_implementation=attention)
    mask = after_the_prefix_mask(config, row_examples, 2, torch.float32)
    assert mask.shape == (1, 1, 4, 6)
    seen = mask[0, 0] if attention == "sdpa" else mask[0, 0] == 0
    assert seen.tolist() == [
        # prefix      first example  second  padding
        [True, True, True, False, False, False],
        [True, True, True, True, False, False],
        [True, True, False, False, True, False],
        [True, True, False, False, False, True],
    ]


def test_a_batch_without_a_long_enough_shared_prefix_is_packed(base_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    # The third conversation has no system prompt: the batch shares only the template's start.
    examples = [encode_for_training(tokenizer, c, 512) for c in mixed_conversations()]
    assert shared_prefix_length(examples) < MIN_SHARED_PREFIX
    shared = collate_sharing_prefix(examples, 0, "cpu")
    packed = collate_packed(examples, 0, "cpu")
    assert shared.attention_mask is None and shared.computed_tokens is None
    assert torch.equal(shared.input_ids, packed.input_ids)


def test_a_model_that_ignores_the_cache_fails_the_prefix_sharing_check(
    base_model_dir: Path,
) -> None:
    model = lora_model(base_model_dir)
    assert prefix_sharing_is_exact(model, "cpu")
    # Without the prefix's keys and values, the rows would not see the prefix.
    original = model.forward

    def ignoring_caches(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("cache", None)
        return original(*args, **kwargs)

    model.forward = ignoring_caches  # type: ignore[method-assign]
    assert not prefix_sharing_is_exact(model, "cpu")
    # So the trainer packs its rows for this model.
    assert collate_for(model, "cpu") == ("packed", collate_packed)

    def refusing_caches(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("cache") is not None:
            raise ValueError("this model does not continue from a cache in training")
        return original(*args, **kwargs)

    model.forward = refusing_caches  # type: ignore[method-assign]
    model.train()
    assert collate_for(model, "cpu") == ("packed", collate_packed)
    assert model.training  # as it was before the check


def tiny_lora(model: torch.nn.Module) -> PeftModel:
    peft_model = get_peft_model(
        model,
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert isinstance(peft_model, PeftModel)
    return peft_model


def test_a_model_that_rescales_its_logits_keeps_the_plain_loss() -> None:
    """Cohere multiplies the head's output by logit_scale; the shortcut would skip that."""
    shape: dict[str, Any] = {
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2,
    }  # fmt: skip
    torch.manual_seed(0)
    cohere = tiny_lora(CohereForCausalLM(CohereConfig(logit_scale=0.5, **shape)))
    llama = tiny_lora(LlamaForCausalLM(LlamaConfig(**shape)))

    assert not isinstance(token_loss_for(cohere, "cpu"), LabelledPositionLoss)
    assert isinstance(token_loss_for(llama, "cpu"), LabelledPositionLoss)


@pytest.mark.parametrize(("sliding_window", "packs_rests"), [(16, False), (None, True)])
def test_a_model_with_sliding_windows_gets_one_rest_a_row(
    sliding_window: int | None, packs_rests: bool
) -> None:
    """The mask that packs rests after a shared prefix has no window; a model whose layers see
    only recent tokens makes its own mask, one rest a row, and still shares the prefix."""
    shape: dict[str, Any] = {
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2,
    }  # fmt: skip
    torch.manual_seed(0)
    model = tiny_lora(MistralForCausalLM(MistralConfig(sliding_window=sliding_window, **shape)))
    layout, collate_shared = collate_for(model, "cpu")
    assert layout == "sharing its prefix"
    prefix = list(range(1, 13))
    examples = [
        EncodedExample(prefix + rest, [IGNORED_LABEL] * len(prefix) + rest)
        for rest in ([20] * 9, [21] * 3, [22] * 4)
    ]
    batch = collate_shared(examples, 0, "cpu")
    assert batch.prefix_ids is not None
    # The two short rests fit one row beside each other unless the model has windows.
    assert batch.input_ids.size(0) == (2 if packs_rests else 3)
    assert (batch.row_examples is not None) == packs_rests


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths) / padded


def ticket_lengths(count: int) -> list[int]:
    rng = random.Random(7)
    return [rng.randint(40, 600) for _ in range(count)]


def test_length_grouped_epochs_hold_every_example_once_in_as_many_batches_as_a_shuffle() -> None:
    lengths = ticket_lengths(301)
    batch_size = 8

    for epoch in range(3):
        batches = epoch_batch_order(lengths, batch_size, seed=1, epoch=epoch)

        assert len(batches) == math.ceil(len(lengths) / batch_size)
        assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
        assert sum(len(batch) < batch_size for batch in batches) == 1


def test_length_grouped_order_is_seeded_and_reshuffled_each_epoch() -> None:
    lengths = ticket_lengths(200)

    first = epoch_batch_order(lengths, 8, seed=1, epoch=0)

    assert epoch_batch_order(lengths, 8, seed=1, epoch=0) == first
    assert epoch_batch_order(lengths, 8, seed=1, epoch=1) != first
    assert epoch_batch_order(lengths, 8, seed=2, epoch=0) != first


def test_length_grouping_pads_far_less_than_a_plain_shuffle() -> None:
    lengths = ticket_lengths(8 * BATCHES_PER_LENGTH_GROUP * 3)
    order = list(range(len(lengths)))
    random.Random(3).shuffle(order)
    shuffled = [order[start : start + 8] for start in range(0, len(order), 8)]

    grouped = epoch_batch_order(lengths, 8, seed=3, epoch=0)

    assert padding_fraction(shuffled, lengths) > 0.3
    assert padding_fraction(grouped, lengths) < 0.1
