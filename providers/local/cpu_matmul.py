"""Linear layers through oneDNN's matrix product while decoding batches on the CPU.

torch's CPU linear calls MKL's sgemm. At the shapes of batched decoding (a few to a few dozen
rows against weights of hundreds to tens of thousands of outputs) oneDNN's fp32 product is
faster on the same weights, as they are, with no copy: on this project's 2-core machine, at 32
rows, SmolLM2-135M's MLP projection (576 -> 1536) took 0.25 ms against 0.43 ms, and its output
head (576 -> 49152) 11 ms against 25 ms; bench/generation.py times batched generation both
ways. With a single row oneDNN's fixed cost outweighs that on small weights, so single rows
keep the default. Both are fp32 products that differ only in the order of their sums, so
greedy decoding picks the same tokens unless two logits tie within rounding.

The oneDNN call is internal to torch (its compiler's CPU lowering uses it), so it is checked
once against torch's linear before it is used, and everything runs as usual when it is
missing or disagrees.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Inputs with fewer rows (all dimensions but the last, multiplied) keep torch's linear.
ONEDNN_MIN_ROWS = 2
_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _onednn_linear(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # No fused activation ("none", no scalars, no algorithm): the plain product plus bias.
    result = torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")
    assert isinstance(result, torch.Tensor)
    return result


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's linear and it agrees with torch's own."""
    if not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, 64, generator=generator)
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator)
    try:
        routed = _onednn_linear(inputs, weight, bias)
    except RuntimeError:
        return False
    return torch.allclose(routed, F.linear(inputs, weight, bias), rtol=1e-4, atol=1e-4)


def _is_routable(inputs: Any, weight: Any, bias: Any) -> bool:
    tensors = [inputs, weight] if bias is None else [inputs, weight, bias]
    if not all(type(tensor) in _PLAIN_TENSOR_TYPES for tensor in tensors):
        return False
    if any(
        tensor.device.type != "cpu" or tensor.dtype != torch.float32 or not tensor.is_contiguous()
        for tensor in tensors[1:]
    ):
        return False
    return (
        inputs.device.type == "cpu"
        and inputs.dtype == torch.float32
        and inputs.layout == torch.strided
        and inputs.dim() >= 2
        and inputs.numel() // max(inputs.shape[-1], 1) >= ONEDNN_MIN_ROWS
        # Decoding needs no gradients; oneDNN's op is not meant for training.
        and not torch.is_grad_enabled()
    )


class _OneDNNLinearMode(TorchFunctionMode):
    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            inputs, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _is_routable(inputs, weight, bias):
                return _onednn_linear(inputs, weight, bias)
        return func(*args, **kwargs)


@contextlib.contextmanager
def onednn_linear() -> Iterator[None]:
    """Within it, in this thread, float32 CPU linear layers with at least ONEDNN_MIN_ROWS rows
    and no gradients run through oneDNN; everything else, as usual."""
    if not onednn_linear_available():
        yield
        return
    with _OneDNNLinearMode():
        yield
