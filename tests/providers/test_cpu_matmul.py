"""Linear layers through oneDNN while decoding on the CPU (providers.local.cpu_matmul), and the
measured choice of where to use it.

What is asserted: inside onednn_linear(model), exactly the model's float32, gradient-free CPU
linear layers with at least two rows of input go to oneDNN, and they agree with torch's own
linear; everything else, other threads, and everything outside it, is torch's linear as
before. No timings: bench/generation.py has them.
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
        with onednn_linear(linear):
            actual = linear(inputs)

    assert routed_calls == [tuple(inputs.shape)]
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


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
    linear = torch.nn.Linear(64, 32, bias=False, dtype=weight.dtype)
    linear.weight = torch.nn.Parameter(weight)
    with torch.inference_mode(), onednn_linear(linear):
        actual = linear(inputs)

    assert routed_calls == []
    torch.testing.assert_close(actual, F.linear(inputs, weight))


def test_training_keeps_torchs_linear_and_its_gradients(
    routed_calls: list[tuple[int, ...]],
) -> None:
    linear = torch.nn.Linear(16, 4)
    inputs = torch.randn(8, 16)
    with onednn_linear(linear):
        linear(inputs).sum().backward()

    assert routed_calls == []
    assert linear.weight.grad is not None
    torch.testing.assert_close(linear.weight.grad, inputs.sum(0).expand(4, 16))


def test_other_threads_and_later_calls_keep_torchs_linear(
    routed_calls: list[tuple[int, ...]],
) -> None:
    # The routing is per thread: a request served meanwhile on the same model is not rerouted.
    linear = torch.nn.Linear(16, 4)
    ready, finish = threading.Event(), threading.Event()

    def hold_the_routing() -> None:
        with torch.inference_mode(), onednn_linear(linear):
            ready.set()
            finish.wait(timeout=10)

    holder = threading.Thread(target=hold_the_routing)
    holder.start()
    try:
        assert ready.wait(timeout=10)
        with torch.inference_mode():
            linear(torch.randn(8, 16))
    finally:
        finish.set()
        holder.join()
    assert routed_calls == []

    with torch.inference_mode():
        with onednn_linear(linear):
            linear(torch.randn(8, 16))
        linear(torch.randn(8, 16))  # after it, as before it
    assert routed_calls == [(8, 16)]


def test_only_linear_layers_are_routed_not_every_operation() -> None:
    # A torch function mode would run Python for every operation of a decoding step; the
    # routing lives on the linear layers alone.
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with torch.inference_mode(), onednn_linear(model):
        assert torch.overrides._get_current_function_mode() is None
        model(torch.randn(4, 16))
    routed = [module for module in model.modules() if "forward" in vars(module)]
    assert routed == [model[0], model[2]]


def test_a_disagreeing_onednn_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(
        inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.zeros(*inputs.shape[:-1], weight.shape[0])

    monkeypatch.setattr(cpu_matmul, "_onednn_linear", wrong)
    onednn_linear_available.cache_clear()
    try:
        assert not onednn_linear_available()
        linear, inputs = torch.nn.Linear(16, 4, bias=False), torch.randn(8, 16)
        with torch.inference_mode(), onednn_linear(linear):
            actual = linear(inputs)
        torch.testing.assert_close(actual, inputs @ linear.weight.T)
    finally:
        onednn_linear_available.cache_clear()


# --- the measured choice ------------------------------------------------------------------------


def test_weight_shapes_are_counted_per_shape() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Linear(32, 16), torch.nn.Linear(16, 32)
    )
    model.append(torch.nn.Linear(16, 32).to(torch.bfloat16))  # not a product routed
    assert cpu_matmul.weight_shapes(model) == ((16, 32, 1), (32, 16, 2))


@pytest.mark.parametrize(
    ("onednn_wins_from", "expected"),
    [(2, 2), (16, 16), (None, None)],
    ids=["always", "from-16-rows", "never"],
)
def test_onednn_is_used_from_the_row_count_where_it_starts_winning(
    monkeypatch: pytest.MonkeyPatch, onednn_wins_from: int | None, expected: int | None
) -> None:
    def onednn(shapes: cpu_matmul.WeightShapes, rows: int) -> float:
        wins = onednn_wins_from is not None and rows >= onednn_wins_from
        return 1.0 if wins else 3.0

    monkeypatch.setattr(cpu_matmul, "_onednn_seconds", onednn)
    monkeypatch.setattr(cpu_matmul, "_torch_seconds", lambda shapes, rows: 2.0)
    shapes = ((1536, 576, 60),)
    cpu_matmul.onednn_min_rows.cache_clear()
    try:
        assert cpu_matmul.onednn_min_rows(shapes) == expected
    finally:
        cpu_matmul.onednn_min_rows.cache_clear()


def test_a_win_at_few_rows_that_is_lost_at_more_does_not_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        cpu_matmul, "_onednn_seconds", lambda shapes, rows: 1.0 if rows in (2, 4, 32, 64) else 3.0
    )
    monkeypatch.setattr(cpu_matmul, "_torch_seconds", lambda shapes, rows: 2.0)
    cpu_matmul.onednn_min_rows.cache_clear()
    try:
        assert cpu_matmul.onednn_min_rows(((8, 8, 1),)) == 32
    finally:
        cpu_matmul.onednn_min_rows.cache_clear()


@pytest.mark.parametrize(("min_rows", "routed_rows"), [(8, [16]), (None, [])])
def test_fastest_linear_routes_only_what_the_measurement_chose(
    monkeypatch: pytest.MonkeyPatch,
    routed_calls: list[tuple[int, ...]],
    min_rows: int | None,
    routed_rows: list[int],
) -> None:
    monkeypatch.setattr(cpu_matmul, "onednn_min_rows", lambda shapes: min_rows)
    assert onednn_linear_available()  # its own check's product is not one of those counted
    routed_calls.clear()
    linear = torch.nn.Linear(64, 32)
    inputs = [torch.randn(rows, 64) for rows in (4, 16)]
    with torch.inference_mode():
        expected = [linear(batch) for batch in inputs]
        with cpu_matmul.fastest_linear(linear):
            actual = [linear(batch) for batch in inputs]
    for got, wanted in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-4, atol=1e-4)
    assert [shape[0] for shape in routed_calls] == routed_rows
    described = cpu_matmul.describe_linear_choice(linear)
    assert described.startswith("oneDNN" if min_rows is not None else "torch")


def test_the_real_measurement_gives_a_probed_row_count_or_none() -> None:
    shapes = ((1536, 576, 2), (576, 1536, 1))
    cpu_matmul.onednn_min_rows.cache_clear()
    try:
        assert cpu_matmul.onednn_min_rows(shapes) in (None, *cpu_matmul.PROBE_ROWS)
        assert cpu_matmul.onednn_min_rows(()) is None
    finally:
        cpu_matmul.onednn_min_rows.cache_clear()
