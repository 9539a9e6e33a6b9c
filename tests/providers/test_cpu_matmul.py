"""Linear layers through oneDNN while decoding on the CPU (providers.local.cpu_matmul).

What is asserted: inside onednn_linear(), exactly the float32, gradient-free CPU products with
at least two rows go to oneDNN, and they agree with torch's own linear; everything else, and
everything outside it, is torch's linear as before. No timings: bench/generation.py has them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from providers.local import cpu_matmul
from providers.local.cpu_matmul import onednn_linear, onednn_linear_available


@pytest.fixture
def routed_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """The input shapes of the products that went to oneDNN."""
    calls: list[tuple[int, ...]] = []
    real = cpu_matmul._onednn_linear

    def counting(
        inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        calls.append(tuple(inputs.shape))
        return real(inputs, weight, bias)

    monkeypatch.setattr(cpu_matmul, "_onednn_linear", counting)
    yield calls


def test_this_torch_build_has_onednns_linear() -> None:
    # CI's pinned torch must have it, or local evaluation silently loses its fast path.
    assert onednn_linear_available()


@pytest.mark.parametrize(
    "inputs",
    [
        torch.randn(32, 576),
        torch.randn(4, 7, 64 * 9)[..., :576],  # a view: rows are not contiguous
        torch.randn(7, 4, 576).transpose(0, 1),
    ],
    ids=["rows", "strided-view", "transposed-3d"],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_products_with_several_rows_go_to_onednn_and_agree_with_torch(
    inputs: torch.Tensor, with_bias: bool, routed_calls: list[tuple[int, ...]]
) -> None:
    linear = torch.nn.Linear(576, 1536, bias=with_bias)
    with torch.inference_mode():
        expected = linear(inputs)
        assert routed_calls == []
        with onednn_linear():
            actual = linear(inputs)

    assert routed_calls == [tuple(inputs.shape)]
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_the_bias_passed_by_keyword_is_added(routed_calls: list[tuple[int, ...]]) -> None:
    inputs, weight, bias = torch.randn(8, 16), torch.randn(4, 16), torch.randn(4)
    with torch.inference_mode(), onednn_linear():
        actual = F.linear(inputs, weight, bias=bias)

    assert len(routed_calls) == 1
    torch.testing.assert_close(actual, inputs @ weight.T + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("inputs", "weight"),
    [
        (torch.randn(1, 64), torch.randn(32, 64)),  # a single row
        (torch.randn(1, 1, 64), torch.randn(32, 64)),  # a single row, 3-d
        (torch.randn(8, 64, dtype=torch.bfloat16), torch.randn(32, 64, dtype=torch.bfloat16)),
        (torch.randn(8, 64, dtype=torch.float64), torch.randn(32, 64, dtype=torch.float64)),
        (torch.randn(8, 64), torch.randn(64, 32).T),  # a transposed weight
    ],
    ids=["one-row", "one-row-3d", "bf16", "fp64", "transposed-weight"],
)
def test_other_products_keep_torchs_linear(
    inputs: torch.Tensor, weight: torch.Tensor, routed_calls: list[tuple[int, ...]]
) -> None:
    with torch.inference_mode(), onednn_linear():
        actual = F.linear(inputs, weight)

    assert routed_calls == []
    torch.testing.assert_close(actual, F.linear(inputs, weight))


def test_training_keeps_torchs_linear_and_its_gradients(
    routed_calls: list[tuple[int, ...]],
) -> None:
    linear = torch.nn.Linear(16, 4)
    inputs = torch.randn(8, 16)
    with onednn_linear():
        linear(inputs).sum().backward()

    assert routed_calls == []
    assert linear.weight.grad is not None
    torch.testing.assert_close(linear.weight.grad, inputs.sum(0).expand(4, 16))


def test_other_threads_keep_torchs_linear(routed_calls: list[tuple[int, ...]]) -> None:
    # Torch function modes are per thread: a request served meanwhile is not rerouted.
    ready, finish = threading.Event(), threading.Event()

    def hold_the_mode() -> None:
        with torch.inference_mode(), onednn_linear():
            ready.set()
            finish.wait(timeout=10)

    holder = threading.Thread(target=hold_the_mode)
    holder.start()
    try:
        assert ready.wait(timeout=10)
        with torch.inference_mode():
            F.linear(torch.randn(8, 16), torch.randn(4, 16))
    finally:
        finish.set()
        holder.join()

    assert routed_calls == []


def test_a_disagreeing_onednn_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(
        inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.zeros(*inputs.shape[:-1], weight.shape[0])

    monkeypatch.setattr(cpu_matmul, "_onednn_linear", wrong)
    onednn_linear_available.cache_clear()
    try:
        assert not onednn_linear_available()
        inputs, weight = torch.randn(8, 16), torch.randn(4, 16)
        with torch.inference_mode(), onednn_linear():
            actual = F.linear(inputs, weight)
        torch.testing.assert_close(actual, inputs @ weight.T)
    finally:
        onednn_linear_available.cache_clear()
