"""The activation quantizer: calibrates on the first batches, then learns its clips (ULQ)."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.quant.functional import CLIP_EPS, IntRange, ULQFunction, ulq_scale_offset
from quantlib.quant.ifmr import ifmr_search

# Calibration keeps at most this many values per layer (a strided subsample beyond it),
# so 50 large images cannot exhaust memory.
MAX_CALIBRATION_VALUES = 1 << 22


class ActivationQuantizer(nn.Module):
    """ULQ fake quantization of one layer's input.

    The first ``batch_num`` forward passes run in float and record the input; after the
    last of them IFMR sets the clips that the config leaves free. A clip given in the
    config is a buffer (fixed); a free one is a parameter the optimizer trains.

    ``symmetric`` (TensorRT's int8): the zero point is 0, so ``clip_min`` is not free but
    ``clip_max * qmin / qmax`` (the grid's -128 below, as IFMR's symmetric candidates);
    the gradient reaches ``clip_max`` through both.
    """

    # Registered in __init__ (a clip as a buffer or a parameter); declared so they type as tensors.
    clip_max: torch.Tensor
    clip_min: torch.Tensor
    observed_max: torch.Tensor
    observed_min: torch.Tensor
    calibrated_batches: torch.Tensor

    def __init__(
        self,
        bits: int = 8,
        *,
        batch_num: int = 1,
        fixed_min: bool = False,
        clip_max: float | None = None,
        clip_min: float | None = None,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.batch_num = batch_num
        self.symmetric = symmetric
        self.fixed_min = fixed_min and not symmetric
        self.given_max = clip_max
        self.given_min = 0.0 if self.fixed_min else None if symmetric else clip_min
        self._set_clip("clip_max", clip_max if clip_max is not None else 1.0, learnable=clip_max is None)
        self._set_clip(
            "clip_min",
            self.given_min if self.given_min is not None else -1.0,
            learnable=self.given_min is None and not symmetric,
        )
        self.register_buffer("observed_max", torch.tensor(float("-inf")))
        self.register_buffer("observed_min", torch.tensor(float("inf")))
        self.register_buffer("calibrated_batches", torch.tensor(0, dtype=torch.int64))
        self._seen = 0
        self._samples: list[torch.Tensor] = []
        self.register_load_state_dict_post_hook(_sync_calibration_state)

    def _set_clip(self, name: str, value: float, *, learnable: bool) -> None:
        tensor = torch.tensor(float(value))
        if learnable:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    # off: passes its input through (what-if evaluation of a layer in float, quantlib.tune.variants)
    bypassed = False

    @property
    def calibrated(self) -> bool:
        return self._seen >= self.batch_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.calibrated:
            self._observe(x)
            return x
        if self.bypassed:
            return x
        return ULQFunction.apply(x, *self.clips(), self.bits)

    def clips(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip_max, clip_min) as the grid uses them: a symmetric one derives its lower clip."""
        if self.symmetric:
            grid = IntRange(self.bits)
            return self.clip_max, self.clip_max * (grid.qmin / grid.qmax)
        return self.clip_max, self.clip_min

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        values = x.detach().flatten()
        self.observed_max.copy_(torch.maximum(self.observed_max, values.max()))
        self.observed_min.copy_(torch.minimum(self.observed_min, values.min()))
        budget = MAX_CALIBRATION_VALUES // self.batch_num
        stride = max(1, values.numel() // budget)
        self._samples.append(values[::stride].clone())
        self._seen += 1
        self.calibrated_batches.fill_(self._seen)
        if self.calibrated:
            self._initialise_clips()

    @torch.no_grad()
    def _initialise_clips(self) -> None:
        samples = torch.cat(self._samples)
        self._samples = []
        found = ifmr_search(
            samples, self.bits, fixed_min=self.fixed_min, clip_max=self.given_max, clip_min=self.given_min
        )
        self.clip_max.fill_(found.clip_max)
        self.clip_min.copy_(self.clips()[1] if self.symmetric else torch.tensor(found.clip_min))

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and integer offset of the current clips' grid, as export writes them (clips clamped to contain 0)."""
        high, low = self.clips()
        return ulq_scale_offset(high.detach().clamp_min(CLIP_EPS), low.detach().clamp_max(0.0), IntRange(self.bits))

    def scale(self) -> torch.Tensor:
        return self.qparams()[0]

    def settings(self) -> tuple[int, int, bool, float | None, float | None, bool]:
        """What the config decides about this quantizer: two that agree can quantize one tensor."""
        return self.bits, self.batch_num, self.fixed_min, self.given_max, self.given_min, self.symmetric

    def extra_repr(self) -> str:
        return f"bits={self.bits}, batch_num={self.batch_num}, fixed_min={self.fixed_min}, symmetric={self.symmetric}"


def _sync_calibration_state(module: ActivationQuantizer, _incompatible: object) -> None:
    """A restored checkpoint keeps its learned clips: calibration never runs again over them."""
    module._seen = int(module.calibrated_batches)
    module._samples = []
