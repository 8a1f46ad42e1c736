"""The fused C kernels compute what the torch-op path computes (the path GPUs and
installs without a C compiler take), to the last bit in the forward."""

from __future__ import annotations

import pytest
import torch

from quantlib.quant import ARQFunction, ULQFunction, functional


def test_the_kernels_were_built() -> None:
    """`make install` compiles them; a silent fallback would only show up as a slow step."""
    assert functional._cpu_kernels is not None


def _ulq(x: torch.Tensor, clip_max: float, clip_min: float, bits: int) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    hi, lo = torch.tensor(clip_max, requires_grad=True), torch.tensor(clip_min, requires_grad=True)
    y = ULQFunction.apply(x, hi, lo, bits)
    grad = torch.linspace(-1.0, 1.0, x.numel()).reshape(x.shape)
    y.backward(grad)
    return y.detach(), x.grad, hi.grad, lo.grad


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("numel", [1, 1000, 600_000])  # one thread and split over threads
def test_ulq_matches_the_torch_path(bits: int, numel: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(numel)
    x = torch.randn(numel) * 2
    fused = _ulq(x, 1.5, -0.7, bits)
    monkeypatch.setattr(functional, "_cpu_kernels", None)
    reference = _ulq(x, 1.5, -0.7, bits)
    assert torch.equal(fused[0], reference[0])
    assert torch.equal(fused[1], reference[1])
    exact = _clip_grads_float64(x, fused[0], 1.5, -0.7, bits)
    for got, want in zip(fused[2:], exact, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def _clip_grads_float64(
    x: torch.Tensor, y: torch.Tensor, clip_max: float, clip_min: float, bits: int
) -> tuple[torch.Tensor, ...]:
    """DESIGN.md's ULQ clip gradients straight from their definition, in float64.

    The torch path's float32 sums lose about 1e-3 of these on 200k elements to
    cancellation; the kernel sums each term in double.
    """
    grid = functional.IntRange(bits)
    scale, offset = functional._qparams(torch.tensor(clip_max), torch.tensor(clip_min), grid)
    low = (grid.qmin - offset) * scale - 0.5 * scale
    high = (grid.qmax - offset) * scale + 0.5 * scale
    g = torch.linspace(-1.0, 1.0, x.numel()).double()
    xd, yd = x.double().flatten(), y.double().flatten()
    inside = (xd > low) & (xd < high)
    err = (g * (yd - xd))[inside].sum() / (scale * grid.levels)
    return err + g[xd >= high].sum(), g[xd <= low].sum() - err


@pytest.mark.parametrize(("shape", "axis"), [((16, 3, 3, 3), 0), ((4, 16, 3, 3), 1), ((10, 64), None), ((8, 1, 5), 0)])
def test_arq_matches_the_torch_path(shape: tuple[int, ...], axis: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape)
    weight[0] = 0.0  # an all-zero channel gets the tiny scale, not a division by zero
    fused = ARQFunction.apply(weight, axis, 8)
    monkeypatch.setattr(functional, "_cpu_kernels", None)
    assert torch.equal(fused, ARQFunction.apply(weight, axis, 8))


def test_non_contiguous_input_takes_the_torch_path() -> None:
    x = torch.randn(64, 32).t()
    y = ULQFunction.apply(x, torch.tensor(1.0), torch.tensor(-1.0), 8)
    assert y.shape == x.shape and torch.isfinite(y).all()
