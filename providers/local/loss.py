"""The training loss of the local provider: the sum of next-token losses over a batch's
labelled positions, with the output head run only where a label follows when the model allows
it, and the checks that the shortcuts give the model's own logits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from providers.batching import MIN_SHARED_PREFIX

from .encoding import (
    IGNORED_LABEL,
    Batch,
    Collate,
    EncodedExample,
    collate,
    collate_packed,
    collate_sharing_prefix,
)

# --- the loss -----------------------------------------------------------------------------------

# Sum of next-token losses over a batch's labelled positions, and how many there were.
TokenLoss = Callable[[Batch], tuple[torch.Tensor, int]]


def batch_forward(module: torch.nn.Module, batch: Batch) -> Any:
    """``module`` (the model, or its decoder) on the batch. A batch that shares its prefix runs
    it first, alone, and its keys and values, copied to every row, are the start of each row's
    attention (their gradients flow back through the copies to the one prefix pass)."""
    if batch.prefix_ids is None:
        return module(**batch.model_inputs())
    prefix = module(input_ids=batch.prefix_ids, use_cache=True)
    cache = prefix.cache
    cache.batch_repeat_interleave(batch.input_ids.size(0))
    inputs = batch.model_inputs()
    if batch.row_examples is not None:
        inputs["attention_mask"] = after_the_prefix_mask(
            module.config, batch.row_examples, batch.prefix_ids.size(1), weights_dtype(module)
        )
    return module(**inputs, cache=cache)


def after_the_prefix_mask(
    config: Any, row_examples: torch.Tensor, prefix_length: int, dtype: torch.dtype
) -> Any:
    """The attention mask of rows that continue from a shared prefix of ``prefix_length``
    tokens and hold several examples each (``row_examples`` numbers them within a row): each
    position sees the whole prefix and, causally, its own example. Made by the mask function of
    the model's attention kernel, in the form that kernel takes (a boolean mask for fused
    attention, a float one to add to the scores for eager)."""

    def visible(
        batch: torch.Tensor, _head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        # Indices broadcast over (rows, 1, queries, keys); the rows' positions count on from
        # the prefix.
        own = row_examples[batch, query - prefix_length]
        keys_example = row_examples[batch, (key - prefix_length).clamp(min=0)]
        return (key < prefix_length) | ((key <= query) & (keys_example == own))

    rows, width = row_examples.shape
    make_mask = ALL_MASK_ATTENTION_FUNCTIONS[config._attn_implementation]
    return make_mask(
        batch_size=rows,
        q_length=width,
        kv_length=prefix_length + width,
        q_offset=prefix_length,
        kv_offset=0,
        mask_function=visible,
        attention_mask=None,
        allow_is_causal_skip=False,
        dtype=dtype,
        config=config,
        use_vmap=False,
        device=row_examples.device,
    )


def summed_token_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """The plain computation: logits at every position, loss where a label follows."""
    logits = batch_forward(model, batch).logits
    predicted = logits[:, :-1, :].float()
    targets = batch.labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORED_LABEL,
        reduction="sum",
    )
    return loss, int((targets != IGNORED_LABEL).sum().item())


def predicting_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (row * width + column) of the positions whose next token is labelled, and
    those next tokens: the only places where logits are needed."""
    following = labels[:, 1:]
    rows, columns = (following != IGNORED_LABEL).nonzero(as_tuple=True)
    return rows * labels.size(1) + columns, following[rows, columns]


class LabelledPositionLoss:
    """The same sum as summed_token_loss, with the output head run only where it counts.

    The decoder still sees every token (prompts are context), but the head's matmul into the
    vocabulary, the fp32 logits and the softmax are computed for labelled positions only; for
    short answers to long prompts that is a few percent of the positions.
    """

    def __init__(self, decoder: torch.nn.Module, head: torch.nn.Module) -> None:
        self.decoder = decoder
        self.head = head

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, int]:
        hidden = batch_forward(self.decoder, batch).last_hidden_state
        positions, targets = predicting_positions(batch.labels)
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
        logits = self.head(selected).float()
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        return loss, int(targets.numel())


def token_loss_for(model: PeftModel, device: str) -> TokenLoss:
    """The fastest loss that gives this model's own logits.

    Some architectures transform the head's output (Gemma's soft-capping, Cohere's logit
    scale); calling the head directly would silently train on other logits, so the shortcut is
    used only after checking that it reproduces the full model's logits.
    """
    plain: TokenLoss = functools.partial(summed_token_loss, model)
    causal_lm = model.get_base_model()
    if not isinstance(causal_lm, PreTrainedModel):
        return plain
    decoder = causal_lm.get_decoder()
    head = causal_lm.get_output_embeddings()
    if decoder is causal_lm or not isinstance(head, torch.nn.Module):
        return plain
    probe = torch.arange(1, 9, device=device).unsqueeze(0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        full = model(input_ids=probe, use_cache=False).logits[0].float()
        shortcut = head(decoder(input_ids=probe, use_cache=False).last_hidden_state[0]).float()
    model.train(was_training)
    if not logits_match(shortcut, full, weights_dtype(model)):
        return plain
    return LabelledPositionLoss(decoder, head)


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's frozen weights (the LoRA weights stay fp32 on a bf16 base)."""
    frozen = (parameter.dtype for parameter in model.parameters() if not parameter.requires_grad)
    return next(frozen, torch.float32)


def logits_match(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> bool:
    """Equal up to rounding, relative to the logits' scale.

    Different kernels (a masked attention against a causal one, a matmul on fewer rows) round
    differently: about 1e-4 of the largest logit in fp32 and 1e-2 in bf16. What the checks look
    for is far larger: logits soft-capped or rescaled, or examples seeing each other, move them
    by a sizeable fraction of that scale.
    """
    if actual.shape != expected.shape:
        return False
    tolerance = 1e-3 if dtype == torch.float32 else 3e-2
    scale = max(1.0, float(expected.float().abs().max()))
    return float((actual.float() - expected.float()).abs().max()) <= tolerance * scale


def packing_is_exact(model: torch.nn.Module, device: str) -> bool:
    """Whether the model keeps examples packed in one row apart, giving each the logits it
    gets alone. Architectures whose attention ignores packed position_ids would let examples
    see each other; training then pads instead."""
    first = list(range(1, 6))
    second = list(range(6, 9))
    one_row = torch.tensor([first + second], device=device)
    restarting = torch.tensor([list(range(len(first))) + list(range(len(second)))], device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=one_row, position_ids=restarting, use_cache=False).logits[0]
        alone = torch.cat(
            [
                model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
                for ids in (first, second)
            ]
        )
    model.train(was_training)
    return logits_match(packed, alone, weights_dtype(model))


def prefix_sharing_is_exact(model: torch.nn.Module, device: str) -> bool:
    """Whether the model continues from a KV cache copied to several rows, with position_ids
    and the attention mask as given, so that examples sharing their prefix, two of them packed
    in one row (one a row for models with sliding windows), get the logits each gets alone."""
    prefix = list(range(1, MIN_SHARED_PREFIX + 3))
    # The longest rest has a row to itself; the other two share one (collate_sharing_prefix).
    rests = ([20, 21, 22, 23, 24, 25], [30, 31], [40, 41, 42])
    examples = [
        EncodedExample(prefix + rest, [IGNORED_LABEL] * (len(prefix) + len(rest) - 1) + rest[-1:])
        for rest in rests
    ]
    packing = not uses_sliding_windows(model)
    batch = collate_sharing_prefix(examples, 0, device, pack_rests=packing)
    if batch.prefix_ids is None or batch.input_ids.size(0) != (2 if packing else 3):
        return False
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shared = batch_forward(model, batch).logits
            alone = [
                model(
                    input_ids=torch.tensor([example.input_ids], device=device), use_cache=False
                ).logits[0]
                for example in examples
            ]
    except (RuntimeError, ValueError, AttributeError, TypeError, KeyError):
        # A model that keeps no cache of this kind, or refuses to continue from one or to take
        # a mask made for it: training packs its rows instead.
        return False
    finally:
        model.train(was_training)
    actual = torch.cat([_rest_logits(shared, batch.input_ids, rest) for rest in rests])
    expected = torch.cat([logits[len(prefix) :] for logits in alone])
    return logits_match(actual, expected, weights_dtype(model))


def _rest_logits(logits: torch.Tensor, input_ids: torch.Tensor, rest: list[int]) -> torch.Tensor:
    """The logits of the positions where ``rest`` lies in the batch (its first token appears
    nowhere else)."""
    row, start = (input_ids == rest[0]).nonzero()[0].tolist()
    return logits[row, start : start + len(rest)]


BatchLayout = Literal["padded", "packed", "sharing its prefix"]
# The ways a batch can be laid out in rows, from the one that runs the most tokens to the one
# that runs the fewest.
BATCH_LAYOUTS: tuple[BatchLayout, ...] = ("padded", "packed", "sharing its prefix")


def batch_layout(model: torch.nn.Module, device: str) -> BatchLayout:
    """The layout of BATCH_LAYOUTS that runs the fewest tokens while giving this model its own
    logits: the batch's shared prefix once with every example continuing from it, else packed
    rows, else one padded example a row. It depends on the attention kernel as well as on the
    architecture: in a bf16 model, torch's fused CPU attention rounds a masked row a bf16 step
    away from the unmasked one now and then, and 30 layers of SmolLM2 grew that to a quarter of
    the logits' scale, where eager attention gave the same logits bit for bit."""
    if not packing_is_exact(model, device):
        return "padded"
    # A batch whose prefix is too short to share is packed, so sharing needs packing too.
    if prefix_sharing_is_exact(model, device):
        return "sharing its prefix"
    return "packed"


def uses_sliding_windows(model: torch.nn.Module) -> bool:
    """Whether some of the model's attention layers see only a window of recent tokens
    (Mistral, Gemma 2 and 3, Qwen 2 where enabled). The mask that packs rests after a shared
    prefix has no window, and the checks run sequences shorter than any window, so they would
    not notice; such models get one rest a row and make their own masks."""
    config = getattr(model, "config", None)
    layer_types = getattr(config, "layer_types", None) or ()
    return "sliding_attention" in layer_types or bool(getattr(config, "sliding_window", None))


def collate_for(model: torch.nn.Module, device: str) -> tuple[BatchLayout, Collate]:
    """This model's batch_layout and the collate function that lays batches out so."""
    layout = batch_layout(model, device)
    if layout == "sharing its prefix":
        if uses_sliding_windows(model):
            return layout, functools.partial(collate_sharing_prefix, pack_rests=False)
        return layout, collate_sharing_prefix
    return layout, collate_packed if layout == "packed" else collate
