"""Model FLOP utilisation of LoRA training: the FLOPs the model needs for the tokens trained,
over what the host's matrix units can do.

Per token, a frozen weight matrix of N parameters costs 2N in the forward pass and 2N in the
backward pass (the gradient with respect to its input; a frozen weight needs no gradient of its
own), so 4N. N is every frozen linear layer of the decoder, for every input token, plus the
output head only at the positions whose next token is labelled: the other positions' logits
enter no loss, so computing them would be waste, like padding. LoRA's own small matrices and
the attention scores (a few percent at these lengths) are left out, so the count errs low.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel


@dataclass(frozen=True)
class ModelFlops:
    per_input_token: float
    per_predicted_token: float

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelFlops:
        """Counted from the model's own layers, so any architecture is counted as it is."""
        decoder = model.get_decoder()
        frozen_linear = sum(
            module.weight.numel()
            for module in decoder.modules()
            if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad
        )
        head = model.get_output_embeddings()
        head_weights = head.weight.numel() if isinstance(head, torch.nn.Linear) else 0
        return cls(per_input_token=4.0 * frozen_linear, per_predicted_token=4.0 * head_weights)

    def of_tokens(self, input_tokens: float, predicted_tokens: float) -> float:
        return self.per_input_token * input_tokens + self.per_predicted_token * predicted_tokens


def utilisation(flops: float, seconds: float, peak_flops: float) -> float | None:
    """The share of the peak rate that flops in seconds achieved; None when unmeasured (or
    the model's FLOPs could not be counted)."""
    if flops <= 0 or seconds <= 0 or peak_flops <= 0:
        return None
    return flops / seconds / peak_flops
