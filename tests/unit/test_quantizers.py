"""The quantizers against DESIGN.md's formulas, written out independently in numpy.

IFMR, ULQ (forward, backward) and ARQ are checked against float64 reference code that
follows the design text literally, so an optimised implementation (fused kernels,
in-place ops, GPU-friendly reductions) can change freely as long as the maths holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from quantlib.quant import ActivationQuantizer, ARQFunction, ULQFunction, WeightQuantizer, arq_quantize, ifmr_search

RATIOS = np.round(0.70 + 0.01 * np.arange(60), 2)  # 0.70 .. 1.29


@dataclass(frozen=True)
class Grid:
    bits: int

    @property
    def n(self) -> int:
        return 2**self.bits - 1

    @property
    def qn(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qp(self) -> int:
        return 2 ** (self.bits - 1) - 1


# ----------------------------------------------------------------- numpy references


def ref_ulq(x: np.ndarray, clip_max: float, clip_min: float, bits: int) -> np.ndarray:
    """DESIGN: s=(cmax-cmin)/N, o=round(Qn-cmin/s), q=clamp(round(x/s+o),Qn,Qp), y=(q-o)s."""
    g = Grid(bits)
    s = (clip_max - clip_min) / g.n
    o = np.round(g.qn - clip_min / s)
    q = np.clip(np.round(x / s + o), g.qn, g.qp)
    return (q - o) * s


def ref_mse(x: np.ndarray, clip_max: float, clip_min: float, bits: int) -> float:
    return float(np.mean((ref_ulq(x, clip_max, clip_min, bits) - x) ** 2))


def ref_candidates(
    x: np.ndarray, bits: int, *, fixed_min: bool = False, clip_max: float | None = None, clip_min: float | None = None
) -> list[tuple[float, float]]:
    """DESIGN's IFMR search space: r in 0.70..1.29 times the observed range."""
    g = Grid(bits)
    if fixed_min:
        if clip_max is not None:
            return [(clip_max, 0.0)]
        return [(r * float(x.max()), 0.0) for r in RATIOS]  # one-sided [0, c] over all N levels
    if clip_max is not None and clip_min is not None:
        return [(clip_max, clip_min)]
    if clip_max is not None:
        return [(clip_max, r * float(x.min())) for r in RATIOS]
    if clip_min is not None:
        return [(r * float(x.max()), clip_min) for r in RATIOS]
    m = max(abs(float(x.max())), abs(float(x.min())))
    out = []
    for r in RATIOS:
        s = r * m / g.qp
        out.append((g.qp * s, g.qn * s))
    return out


def ref_ifmr(x: np.ndarray, bits: int, **kw: object) -> tuple[float, float, float]:
    """(clip_max, clip_min, mse) of the candidate with the least quantisation MSE."""
    scored = [(ref_mse(x, hi, lo, bits), hi, lo) for hi, lo in ref_candidates(x, bits, **kw)]  # type: ignore[arg-type]
    mse, hi, lo = min(scored)
    return hi, lo, mse


def assert_ifmr_optimal(samples: torch.Tensor, bits: int, chosen_max: float, chosen_min: float, **kw: object) -> None:
    """The chosen clips are one of DESIGN's candidates and have the least MSE among them.

    Candidates whose MSEs tie to float precision are equally right, so optimality is
    checked by MSE rather than by demanding one particular ratio.
    """
    x = samples.double().numpy().ravel()
    candidates = ref_candidates(x, bits, **kw)  # type: ignore[arg-type]
    assert any(
        np.isclose(chosen_max, hi, rtol=1e-5, atol=1e-7) and np.isclose(chosen_min, lo, rtol=1e-5, atol=1e-7)
        for hi, lo in candidates
    ), f"({chosen_max}, {chosen_min}) is not an IFMR candidate"
    _, _, best = ref_ifmr(x, bits, **kw)
    assert ref_mse(x, chosen_max, chosen_min, bits) <= best * (1 + 1e-5) + 1e-12


# ---------------------------------------------------------------------------- IFMR


def _gaussian(n: int = 4000) -> torch.Tensor:
    return torch.randn(n) * 1.5 + 0.2


def _uniform(n: int = 4000) -> torch.Tensor:
    """Uneven range (-1.3, 1.7): the best symmetric clip is inside 0.70..1.29 x max for 8 and 4 bits."""
    return torch.rand(n) * 3.0 - 1.3


def _relu_data(n: int = 4000) -> torch.Tensor:
    return torch.relu(torch.randn(n) * 2.0)


def _skewed(n: int = 4000) -> torch.Tensor:
    """Asymmetric: a long positive tail and a short negative one."""
    return torch.cat([torch.distributions.Exponential(1.0).sample((n,)), -0.3 * torch.rand(n // 4)])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("data", [_uniform, _gaussian], ids=["uniform", "gaussian"])
def test_ifmr_symmetric_matches_reference(bits: int, data: object) -> None:
    x = data()  # type: ignore[operator]
    found = ifmr_search(x, bits)
    assert_ifmr_optimal(x, bits, found.clip_max, found.clip_min)
    # symmetric grid: clip_max = Qp s, clip_min = Qn s
    g = Grid(bits)
    assert found.clip_min == pytest.approx(found.clip_max * g.qn / g.qp, rel=1e-6)
    assert found.mse == pytest.approx(ref_mse(x.double().numpy(), found.clip_max, found.clip_min, bits), rel=1e-3)


@pytest.mark.parametrize("bits", [8, 4])
def test_ifmr_reference_optimum_is_interior(bits: int) -> None:
    """Guard for the test data itself: the best ratio must not sit on the search edge,
    or a search over the wrong range could still pass the comparison above."""
    x = _uniform().double().numpy()
    hi, _, _ = ref_ifmr(x, bits)
    ratio = hi / max(abs(x.max()), abs(x.min()))
    assert 0.705 < ratio < 1.285


def test_ifmr_search_stops_at_070_of_the_range() -> None:
    """Gaussian data at 4 bits would like a tighter clip than 0.70 x max (the reference
    MSE keeps falling below it); the search range ends there, so that is the answer."""
    x = _gaussian()
    m = float(x.abs().max())
    xd = x.double().numpy()
    assert ref_mse(xd, 0.6 * m, -0.6 * m * 8 / 7, 4) < ref_mse(xd, 0.7 * m, -0.7 * m * 8 / 7, 4)
    found = ifmr_search(x, 4)
    assert found.clip_max == pytest.approx(0.70 * m, rel=1e-5)


def test_ifmr_keeps_a_large_outlier_when_clipping_it_costs_more() -> None:
    """One far outlier among small values: clipping it costs more MSE than coarse steps,
    so IFMR keeps (nearly) the full range rather than the tightest candidate."""
    x = torch.cat([torch.randn(5000) * 0.1, torch.tensor([50.0])])
    found = ifmr_search(x, 8)
    assert found.clip_max > 0.95 * 50.0
    assert_ifmr_optimal(x, 8, found.clip_max, found.clip_min)


@pytest.mark.parametrize("bits", [8, 4])
def test_ifmr_fixed_min_matches_reference(bits: int) -> None:
    x = _relu_data()
    found = ifmr_search(x, bits, fixed_min=True)
    assert found.clip_min == 0.0
    assert_ifmr_optimal(x, bits, found.clip_max, found.clip_min, fixed_min=True)


@pytest.mark.parametrize("bits", [8, 4])
def test_ifmr_clip_max_fixed_searches_only_clip_min(bits: int) -> None:
    x = _skewed()
    found = ifmr_search(x, bits, clip_max=2.5)
    assert found.clip_max == 2.5
    assert found.clip_min < 0
    assert_ifmr_optimal(x, bits, found.clip_max, found.clip_min, clip_max=2.5)


@pytest.mark.parametrize("bits", [8, 4])
def test_ifmr_clip_min_fixed_searches_only_clip_max(bits: int) -> None:
    x = _skewed()
    found = ifmr_search(x, bits, clip_min=-0.5)
    assert found.clip_min == -0.5
    assert_ifmr_optimal(x, bits, found.clip_max, found.clip_min, clip_min=-0.5)


def test_ifmr_both_clips_fixed_is_no_search() -> None:
    found = ifmr_search(_gaussian(), 8, clip_max=1.0, clip_min=-2.0)
    assert (found.clip_max, found.clip_min) == (1.0, -2.0)


def test_ifmr_beats_the_naive_min_max_range() -> None:
    x = _gaussian()
    found = ifmr_search(x, 4)
    naive = ref_mse(x.double().numpy(), float(x.abs().max()), -float(x.abs().max()) * 8 / 7, 4)
    assert found.mse <= naive


# ---------------------------------------------------------------------- ULQ forward


def _away_from_ties(x: np.ndarray, clip_max: float, clip_min: float, bits: int) -> np.ndarray:
    """Mask of values whose x/s is not within 1e-3 of a rounding tie (float32 vs float64)."""
    s = (clip_max - clip_min) / Grid(bits).n
    frac = np.abs((x / s) - np.floor(x / s) - 0.5)
    return frac > 1e-3


@pytest.mark.parametrize(
    ("bits", "clip_max", "clip_min"),
    [(8, 1.27, -1.28), (8, 2.0, -0.53), (8, 3.0, 0.0), (4, 0.7, -0.8), (4, 2.2, -0.37)],
)
def test_ulq_forward_matches_design_formula(bits: int, clip_max: float, clip_min: float) -> None:
    x = torch.linspace(-1.6 * max(clip_max, 1.0), 1.6 * max(clip_max, 1.0), 20001)
    y = ULQFunction.apply(x, torch.tensor(clip_max), torch.tensor(clip_min), bits)
    ref = ref_ulq(x.double().numpy(), clip_max, clip_min, bits)
    keep = _away_from_ties(x.double().numpy(), clip_max, clip_min, bits)
    assert keep.mean() > 0.99
    np.testing.assert_allclose(y.numpy()[keep], ref[keep], rtol=1e-5, atol=1e-6)
    # only 2^bits distinct values come out, and the clips bound them
    assert len(np.unique(np.round(y.numpy() / ((clip_max - clip_min) / Grid(bits).n)))) <= 2**bits
    step = (clip_max - clip_min) / Grid(bits).n  # a rounded offset shifts the grid by < s/2
    assert y.max() <= clip_max + step / 2 + 1e-6 and y.min() >= clip_min - step / 2 - 1e-6


def test_ulq_forward_keeps_shape_and_dtype() -> None:
    x = torch.randn(2, 3, 4, 5)
    y = ULQFunction.apply(x, torch.tensor(1.0), torch.tensor(-1.0), 8)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert not torch.equal(y, x)


def test_ulq_clip_min_trained_past_zero_acts_as_zero() -> None:
    """Training may push a free clip_min above 0; the grid keeps clip_max >= 0 >= clip_min
    (export clamps the same way, so the deployed model agrees)."""
    x = torch.linspace(-1.0, 2.0, 301)
    pushed = ULQFunction.apply(x, torch.tensor(1.5), torch.tensor(0.2), 8)
    at_zero = ULQFunction.apply(x, torch.tensor(1.5), torch.tensor(0.0), 8)
    torch.testing.assert_close(pushed, at_zero, rtol=0, atol=0)


# --------------------------------------------------------------------- ULQ backward

# Clips where -clip_min/s is an exact integer, so the offset needs no rounding and the
# straight-through surrogate below has the same derivative as the design's formulas.
EXACT_CLIPS = [(8, 1.27, -1.28), (4, 0.7, -0.8), (8, 2.55, 0.0)]


def _backward_inputs(bits: int, clip_max: float, clip_min: float, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """x spread over and beyond the range, with no value within one step of a clip
    (where 'inside' and 'outside' would be a matter of rounding), and a random upstream g."""
    rng = np.random.default_rng(bits)
    s = (clip_max - clip_min) / Grid(bits).n
    span = clip_max - clip_min
    x = rng.uniform(clip_min - 0.4 * span, clip_max + 0.4 * span, n)
    x = x[(np.abs(x - clip_max) > 1.5 * s) & (np.abs(x - clip_min) > 1.5 * s)]
    x = x[_away_from_ties(x, clip_max, clip_min, bits)]
    g = rng.normal(size=x.shape)
    return x.astype(np.float32), g.astype(np.float32)


def _ulq_grads(
    x: np.ndarray, g: np.ndarray, clip_max: float, clip_min: float, bits: int
) -> tuple[np.ndarray, float, float]:
    xt = torch.tensor(x, requires_grad=True)
    hi = torch.tensor(clip_max, requires_grad=True)
    lo = torch.tensor(clip_min, requires_grad=True)
    y = ULQFunction.apply(xt, hi, lo, bits)
    (y * torch.tensor(g)).sum().backward()
    assert xt.grad is not None and hi.grad is not None and lo.grad is not None
    return xt.grad.numpy(), float(hi.grad), float(lo.grad)


@pytest.mark.parametrize(("bits", "clip_max", "clip_min"), EXACT_CLIPS)
def test_ulq_input_grad_is_straight_through_inside_zero_outside(bits: int, clip_max: float, clip_min: float) -> None:
    x, g = _backward_inputs(bits, clip_max, clip_min)
    grad_x, _, _ = _ulq_grads(x, g, clip_max, clip_min, bits)
    inside = (x > clip_min) & (x < clip_max)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(grad_x[inside], g[inside])
    np.testing.assert_array_equal(grad_x[~inside], 0.0)


@pytest.mark.parametrize(("bits", "clip_max", "clip_min"), EXACT_CLIPS)
def test_ulq_grads_do_not_depend_on_the_input_shape(bits: int, clip_max: float, clip_min: float) -> None:
    """Activations are N x C x H x W: the backward reduces over all of it and keeps the shape."""
    x, g = _backward_inputs(bits, clip_max, clip_min)
    n = x.size - x.size % 24
    flat = _ulq_grads(x[:n], g[:n], clip_max, clip_min, bits)
    shaped = _ulq_grads(x[:n].reshape(2, 3, 4, -1), g[:n].reshape(2, 3, 4, -1), clip_max, clip_min, bits)
    assert shaped[0].shape == (2, 3, 4, n // 24)
    np.testing.assert_array_equal(shaped[0].reshape(-1), flat[0])
    assert shaped[1] == pytest.approx(flat[1], rel=1e-5) and shaped[2] == pytest.approx(flat[2], rel=1e-5)


@pytest.mark.parametrize(("bits", "clip_max", "clip_min"), EXACT_CLIPS)
def test_ulq_clip_grads_match_design_formulas(bits: int, clip_max: float, clip_min: float) -> None:
    """dL/dclip_max = sum g (e + U), dL/dclip_min = sum g (L - e), e = (round(v) - v) / N."""
    x, g = _backward_inputs(bits, clip_max, clip_min)
    _, grad_max, grad_min = _ulq_grads(x, g, clip_max, clip_min, bits)
    xd, gd = x.astype(np.float64), g.astype(np.float64)
    s = (clip_max - clip_min) / Grid(bits).n
    upper = (xd > clip_max).astype(np.float64)
    lower = (xd < clip_min).astype(np.float64)
    v = np.clip(xd, clip_min, clip_max) / s
    e = (np.round(v) - v) / Grid(bits).n
    want_max = float(np.sum(gd * (e + upper)))
    want_min = float(np.sum(gd * (lower - e)))
    scale = float(np.abs(gd).sum())
    assert grad_max == pytest.approx(want_max, abs=1e-5 * scale)
    assert grad_min == pytest.approx(want_min, abs=1e-5 * scale)


def _surrogate(
    x: np.ndarray, g: np.ndarray, clip_max: float, clip_min: float, bits: int, base: tuple[float, float]
) -> float:
    """sum g * y where every round() is its value plus the residual frozen at ``base``:
    the function whose exact derivative the straight-through estimator claims to be."""
    grid = Grid(bits)

    def parts(hi: float, lo: float, r_o: float, r_t: np.ndarray | float) -> tuple[float, float, np.ndarray]:
        s = (hi - lo) / grid.n
        o = grid.qn - lo / s + r_o
        t = x / s + o
        return s, o, t + r_t

    s0, o0, _ = parts(*base, 0.0, 0.0)
    r_o = round(o0) - o0
    _, _, t0 = parts(*base, r_o, 0.0)
    r_t = np.round(t0) - t0
    s, o, t = parts(clip_max, clip_min, r_o, r_t)
    y = (np.clip(t, grid.qn, grid.qp) - o) * s
    return float(np.sum(g * y))


@pytest.mark.parametrize(("bits", "clip_max", "clip_min"), EXACT_CLIPS)
def test_ulq_grads_agree_with_finite_differences_of_surrogate(bits: int, clip_max: float, clip_min: float) -> None:
    x32, g32 = _backward_inputs(bits, clip_max, clip_min)
    x, g = x32.astype(np.float64), g32.astype(np.float64)
    base = (clip_max, clip_min)
    # the surrogate is the forward itself at the base point
    y = ULQFunction.apply(torch.tensor(x32), torch.tensor(clip_max), torch.tensor(clip_min), bits)
    forward = float((y.double() * torch.tensor(g)).sum())
    assert _surrogate(x, g, clip_max, clip_min, bits, base) == pytest.approx(forward, abs=1e-3)

    def f(hi: float, lo: float) -> float:
        return _surrogate(x, g, hi, lo, bits, base)

    h = 1e-6
    fd_max = (f(clip_max + h, clip_min) - f(clip_max - h, clip_min)) / (2 * h)
    fd_min = (f(clip_max, clip_min + h) - f(clip_max, clip_min - h)) / (2 * h)
    _, grad_max, grad_min = _ulq_grads(x32, g32, clip_max, clip_min, bits)
    scale = float(np.abs(g).sum())
    assert grad_max == pytest.approx(fd_max, abs=1e-4 * scale)
    assert grad_min == pytest.approx(fd_min, abs=1e-4 * scale)
    # and the finite differences are not trivially zero
    assert abs(fd_max) > 1e-3 * scale or abs(fd_min) > 1e-3 * scale


def test_ulq_grad_not_needed_for_fixed_clips() -> None:
    """A fixed (buffer) clip has no grad; the input and the free clip still get theirs."""
    x = torch.randn(100, requires_grad=True)
    hi = torch.tensor(1.0)
    lo = torch.tensor(-1.0, requires_grad=True)
    ULQFunction.apply(x, hi, lo, 8).sum().backward()
    assert hi.grad is None and lo.grad is not None and x.grad is not None


# ----------------------------------------------------------------------------- ARQ


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("shape", "axis"), [((6, 3, 3, 3), 0), ((10, 7), 0), ((3, 5, 2, 2), 1), ((4, 2, 3), None)])
def test_arq_scales_and_grid(bits: int, shape: tuple[int, ...], axis: int | None) -> None:
    """AMCT's scale, max(max(w) / qmax, -min(w) / -qmin), per output channel or per tensor; the whole grid."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    w = torch.randn(*shape)
    y = ARQFunction.apply(w, axis, bits)
    wd = w.double().numpy()
    dims = tuple(d for d in range(w.dim()) if d != axis)
    scale = np.maximum(wd.max(axis=dims, keepdims=True) / qmax, wd.min(axis=dims, keepdims=True) / qmin)
    q = y.double().numpy() / scale
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)  # on the grid
    np.testing.assert_allclose(y.double().numpy(), np.round(wd / scale) * scale, rtol=1e-5, atol=1e-7)
    q = np.round(q)
    reached = (q.max(axis=dims) == qmax) | (q.min(axis=dims) == qmin)
    assert reached.all(), "each channel's larger side reaches its end of the grid"

    q_int, scales = arq_quantize(w, axis, bits)
    assert q_int.dtype == torch.int8 and qmin <= int(q_int.min()) and int(q_int.max()) <= qmax
    np.testing.assert_allclose(scales.double().numpy().ravel(), scale.ravel(), rtol=1e-6)
    shaped = scales.reshape(scale.shape) if axis is not None else scales.reshape(())
    torch.testing.assert_close(q_int.float() * shaped, y, rtol=1e-6, atol=1e-7)


def test_arq_by_hand_uses_minus_128() -> None:
    """Hand-computed, as AMCT's ARQ: channel 0's larger side is negative, so -1.28 / -128 = 0.01 is its
    scale (max|w| / 127 would give 0.010079) and -1.28 lands on -128; channel 1's is positive."""
    w = torch.tensor([[-1.28, 0.5, 1.0], [1.27, -0.3, 0.0]])
    q, scale = arq_quantize(w, 0, 8)
    torch.testing.assert_close(scale, torch.tensor([0.01, 0.01]), rtol=1e-6, atol=0)
    assert q.tolist() == [[-128, 50, 100], [127, -30, 0]]
    torch.testing.assert_close(ARQFunction.apply(w, 0, 8), q.float() * 0.01, rtol=1e-6, atol=1e-7)
    q4, scale4 = arq_quantize(torch.tensor([[-0.8, 0.35, 0.7]]), 0, 4)  # INT4: -0.8 / -8 = 0.1
    torch.testing.assert_close(scale4, torch.tensor([0.1]), rtol=1e-6, atol=0)
    assert q4.tolist() == [[-8, 4, 7]]


def test_arq_gradient_is_straight_through() -> None:
    w = torch.randn(5, 4, 3, requires_grad=True)
    g = torch.randn(5, 4, 3)
    (ARQFunction.apply(w, 0, 4) * g).sum().backward()
    assert w.grad is not None
    torch.testing.assert_close(w.grad, g, rtol=0, atol=0)


@pytest.mark.parametrize("channel_wise", [True, False])
def test_arq_zero_channel_gives_no_nan(channel_wise: bool) -> None:
    """A pruned (all-zero) channel must not divide by zero."""
    w = torch.randn(4, 3, 3)
    w[2] = 0.0
    if not channel_wise:
        w.zero_()
    w.requires_grad_(True)
    quant = WeightQuantizer(8, channel_wise=channel_wise, axis=0)
    y = quant(w)
    assert torch.isfinite(y).all()
    assert torch.equal(y[2], torch.zeros_like(y[2]))
    y.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    q, scale = quant.quantize(w)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(q[2], torch.zeros_like(q[2]))


def test_weight_quantizer_recomputes_scale_from_current_weights() -> None:
    """ARQ has no state: scaling the weights scales the result."""
    quant = WeightQuantizer(8, channel_wise=True, axis=0)
    w = torch.randn(3, 5)
    torch.testing.assert_close(quant(w * 3.0), quant(w) * 3.0)
    assert quant.scale_axis == 0
    assert WeightQuantizer(8, channel_wise=False).scale_axis is None
    assert len(list(quant.parameters())) == 0


# -------------------------------------------------------------- ActivationQuantizer


def test_activation_quantizer_calibrates_then_quantizes() -> None:
    """The first batch_num forwards pass the input through and record its range; IFMR
    then sets both (free) clips from everything seen, and quantization starts."""
    quant = ActivationQuantizer(8, batch_num=2)
    assert isinstance(quant.clip_max, torch.nn.Parameter) and isinstance(quant.clip_min, torch.nn.Parameter)
    batches = [torch.randn(4, 16) * 2.0, torch.randn(4, 16) - 0.5]
    for i, x in enumerate(batches):
        assert not quant.calibrated
        assert torch.equal(quant(x), x)
        assert int(quant.calibrated_batches) == i + 1
    assert quant.calibrated
    seen = torch.cat([b.flatten() for b in batches])
    assert float(quant.observed_max) == float(seen.max())
    assert float(quant.observed_min) == float(seen.min())
    assert_ifmr_optimal(seen, 8, quant.clip_max.item(), quant.clip_min.item())

    x = torch.randn(4, 16) * 2.0
    y = quant(x)
    assert not torch.equal(y, x)
    np.testing.assert_allclose(
        y.detach().numpy(), ref_ulq(x.double().numpy(), quant.clip_max.item(), quant.clip_min.item(), 8), atol=1e-5
    )
    assert int(quant.calibrated_batches) == 2  # no more calibration


def test_activation_quantizer_calibration_is_differentiable_identity() -> None:
    quant = ActivationQuantizer(8, batch_num=1)
    x = torch.randn(10, requires_grad=True)
    quant(x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones(10))


def _step(quant: ActivationQuantizer, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.SGD(quant.parameters(), lr=0.05)
    g = torch.randn_like(x)
    for _ in range(steps):
        loss = (quant(x) * g).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(("given", "free"), [("clip_max", "clip_min"), ("clip_min", "clip_max")])
def test_given_clip_is_a_fixed_buffer_and_free_clip_learns(given: str, free: str) -> None:
    """A clip set in the config is fixed (not learned, no IFMR); the other is trained."""
    value = 2.0 if given == "clip_max" else -1.5
    quant = ActivationQuantizer(8, batch_num=1, **{given: value})
    buffers = dict(quant.named_buffers())
    params = dict(quant.named_parameters())
    assert given in buffers and given not in params
    assert free in params and free not in buffers
    x = torch.randn(64) * 2.0
    quant(x)  # calibration
    assert getattr(quant, given).item() == value  # IFMR left it alone
    after_ifmr = getattr(quant, free).item()
    assert_ifmr_optimal(x, 8, quant.clip_max.item(), quant.clip_min.item(), **{given: value})
    _step(quant, x)
    assert getattr(quant, given).item() == value
    assert getattr(quant, free).item() != after_ifmr


def test_both_clips_given_leave_nothing_to_train() -> None:
    quant = ActivationQuantizer(4, batch_num=1, clip_max=1.0, clip_min=-1.0)
    assert list(quant.parameters()) == []
    x = torch.randn(50)
    quant(x)
    assert (quant.clip_max.item(), quant.clip_min.item()) == (1.0, -1.0)


def test_fixed_min_pins_clip_min_at_zero() -> None:
    quant = ActivationQuantizer(8, batch_num=1, fixed_min=True)
    assert "clip_min" in dict(quant.named_buffers())
    assert "clip_max" in dict(quant.named_parameters())
    x = torch.relu(torch.randn(256) * 3.0)
    quant(x)
    assert quant.clip_min.item() == 0.0
    assert_ifmr_optimal(x, 8, quant.clip_max.item(), 0.0, fixed_min=True)
    start = quant.clip_max.item()
    _step(quant, x)
    assert quant.clip_min.item() == 0.0
    assert quant.clip_max.item() != start
    # negative inputs clamp to the lower bound 0, the grid uses all 256 levels on [0, clip_max]
    y = quant(torch.tensor([-1.0, -0.1, 0.0]))
    assert torch.equal(y, torch.zeros(3))


def test_fixed_min_overrides_a_given_clip_min() -> None:
    quant = ActivationQuantizer(8, batch_num=1, fixed_min=True, clip_min=-3.0)
    quant(torch.relu(torch.randn(32)))
    assert quant.clip_min.item() == 0.0


def test_activation_quantizer_state_dict_carries_calibration() -> None:
    """A restored quantizer keeps its clips and does not calibrate again."""
    quant = ActivationQuantizer(8, batch_num=1)
    quant(torch.randn(64))
    _step(quant, torch.randn(64))
    fresh = ActivationQuantizer(8, batch_num=1)
    fresh.load_state_dict(quant.state_dict())
    assert fresh.calibrated
    x = torch.randn(64) * 5
    torch.testing.assert_close(fresh(x), quant(x))
    assert fresh.clip_max.item() == quant.clip_max.item()
