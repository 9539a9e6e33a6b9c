"""Linear layers through oneDNN's matrix product while decoding batches on the CPU, where that
is measured to be faster.

torch's CPU linear calls MKL's sgemm. At the shapes of batched decoding (a few to a few dozen
rows against weights of hundreds to tens of thousands of outputs) oneDNN's fp32 product, on the
same weights with no copy, was faster on the machine where this was written (at 32 rows,
SmolLM2-135M's output head took 11 ms against 25 ms), and slower on another: there batched
generation ran at 0.77x with it. So fastest_linear() times both products on the model's own
weight shapes at a range of row counts, once per process, and routes through oneDNN only the
row counts from which it won; bench/generation.py times batched generation both ways and
prints the choice. Both are fp32 products that differ only in the order of their sums, so
greedy decoding picks the same tokens unless two logits tie within rounding.

The oneDNN call is internal to torch (its compiler's CPU lowering uses it), so it is checked
once against torch's linear before it is used, and everything runs as usual when it is
missing or disagrees.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

# Inputs with fewer rows (all dimensions but the last, multiplied) keep torch's linear: with a
# single row oneDNN's fixed cost outweighs any gain on small weights.
ONEDNN_MIN_ROWS = 2
# The row counts at which fastest_linear compares the two products: decoding batches of a
# few to 64 prompts (larger counts, such as a prompt pass, follow the largest).
PROBE_ROWS = (2, 4, 8, 16, 32, 64)
PROBE_REPEATS = 5
# A weight's output and input sizes, and how many of the model's linear layers have them.
WeightShapes = tuple[tuple[int, int, int], ...]
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


def _is_routable(inputs: Any, weight: Any, bias: Any, min_rows: int) -> bool:
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
        and inputs.numel() // max(inputs.shape[-1], 1) >= min_rows
        # Decoding needs no gradients; oneDNN's op is not meant for training.
        and not torch.is_grad_enabled()
    )


# The fewest rows this thread routes through oneDNN, while inside onednn_linear; None outside.
_routing = threading.local()


def _routed_linear(module: torch.nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    """A linear layer's forward: oneDNN's product where this thread routes this many rows,
    torch's otherwise."""
    min_rows: int | None = getattr(_routing, "min_rows", None)
    if min_rows is not None and _is_routable(inputs, module.weight, module.bias, min_rows):
        return _onednn_linear(inputs, module.weight, module.bias)
    return F.linear(inputs, module.weight, module.bias)


def _route_linear_layers(model: torch.nn.Module) -> None:
    """Give each of the model's linear layers the routing forward, once. Only the layers: a
    torch function mode routing F.linear wherever it is called ran Python for every other
    operation of a decoding step too (3 % of a batch of 32 on a 2-core AMD EPYC, one A/B)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear and "forward" not in vars(module):
            module.forward = functools.partial(_routed_linear, module)  # type: ignore[method-assign]


@contextlib.contextmanager
def onednn_linear(model: torch.nn.Module, min_rows: int = ONEDNN_MIN_ROWS) -> Iterator[None]:
    """Within it, in this thread, the model's float32 CPU linear layers with at least min_rows
    rows of input and no gradients run through oneDNN; everything else, as usual."""
    if not onednn_linear_available():
        yield
        return
    _route_linear_layers(model)
    outer = getattr(_routing, "min_rows", None)
    _routing.min_rows = max(min_rows, ONEDNN_MIN_ROWS)
    try:
        yield
    finally:
        _routing.min_rows = outer


@contextlib.contextmanager
def fastest_linear(model: torch.nn.Module) -> Iterator[None]:
    """Within it, this model's decoding products run through oneDNN at the row counts where it
    was measured faster than torch's linear on this host, and through torch's elsewhere."""
    min_rows = onednn_min_rows(weight_shapes(model)) if onednn_linear_available() else None
    if min_rows is None:
        yield
        return
    with onednn_linear(model, min_rows):
        yield


def weight_shapes(model: torch.nn.Module) -> WeightShapes:
    """The model's float32 CPU linear weights by shape, with how many have each."""
    counts: dict[tuple[int, int], int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or not isinstance(weight, torch.Tensor):
            continue
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            continue
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        counts[shape] = counts.get(shape, 0) + 1
    return tuple((out, inner, count) for (out, inner), count in sorted(counts.items()))


@functools.cache
def onednn_min_rows(shapes: WeightShapes) -> int | None:
    """The fewest probed rows from which oneDNN's products, summed over these weights, beat
    torch's at that row count and every larger one; None when they do not even at the most."""
    if not shapes:
        return None
    wins = [_onednn_seconds(shapes, rows) < _torch_seconds(shapes, rows) for rows in PROBE_ROWS]
    if not wins[-1]:
        return None
    first_win_of_the_rest = len(wins)
    while first_win_of_the_rest > 0 and wins[first_win_of_the_rest - 1]:
        first_win_of_the_rest -= 1
    return PROBE_ROWS[first_win_of_the_rest]


def describe_linear_choice(model: torch.nn.Module) -> str:
    """Which product fastest_linear uses for this model here, in words."""
    if not onednn_linear_available():
        return "torch's linear (this torch has no usable oneDNN linear)"
    min_rows = onednn_min_rows(weight_shapes(model))
    if min_rows is None:
        return "torch's linear (faster than oneDNN's here at every probed row count)"
    return f"oneDNN's linear from {min_rows} rows (faster than torch's here from there)"


def _torch_seconds(shapes: WeightShapes, rows: int) -> float:
    return _summed_seconds(shapes, rows, lambda x, w: F.linear(x, w))


def _onednn_seconds(shapes: WeightShapes, rows: int) -> float:
    return _summed_seconds(shapes, rows, lambda x, w: _onednn_linear(x, w, None))


def _summed_seconds(shapes: WeightShapes, rows: int, product: Any) -> float:
    """The median time of one product per shape, times how many layers have that shape."""
    total = 0.0
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for out, inner, count in shapes:
            inputs = torch.randn(rows, inner, generator=generator)
            weight = torch.randn(out, inner, generator=generator)
            product(inputs, weight)
            times = []
            for _ in range(PROBE_REPEATS):
                began = time.perf_counter()
                product(inputs, weight)
                times.append(time.perf_counter() - began)
            total += statistics.median(times) * count
    return total
