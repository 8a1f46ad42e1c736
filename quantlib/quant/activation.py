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
    ) -> None:
        super().__init__()
        self.bits = bits
        self.batch_num = batch_num
        self.fixed_min = fixed_min
        self.given_max = clip_max
        self.given_min = 0.0 if fixed_min else clip_min
        self._set_clip("clip_max", clip_max if clip_max is not None else 1.0, learnable=clip_max is None)
        self._set_clip(
            "clip_min", self.given_min if self.given_min is not None else -1.0, learnable=self.given_min is None
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

    @property
    def calibrated(self) -> bool:
        return self._seen >= self.batch_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.calibrated:
            self._observe(x)
            return x
        return ULQFunction.apply(x, self.clip_max, self.clip_min, self.bits)

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
        self.clip_min.fill_(found.clip_min)

    def scale(self) -> torch.Tensor:
        """The step of the current clips' grid, as export writes it (clips clamped to contain 0)."""
        clip_max = self.clip_max.detach().clamp_min(CLIP_EPS)
        clip_min = self.clip_min.detach().clamp_max(0.0)
        return ulq_scale_offset(clip_max, clip_min, IntRange(self.bits))[0]

    def extra_repr(self) -> str:
        return f"bits={self.bits}, batch_num={self.batch_num}, fixed_min={self.fixed_min}"


def _sync_calibration_state(module: ActivationQuantizer, _incompatible: object) -> None:
    """A restored checkpoint keeps its learned clips: calibration never runs again over them."""
    module._seen = int(module.calibrated_batches)
    module._samples = []
