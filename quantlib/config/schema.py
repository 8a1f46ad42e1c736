"""The AMCT-style quantization config, version 1, as typed objects.

Pydantic models give us strict types and a JSON schema the service publishes; the
messages users read are written by :mod:`quantlib.config.parse`, not by pydantic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DstType = Literal["INT8", "INT4"]
DST_TYPES: tuple[str, ...] = ("INT8", "INT4")
BITS: dict[str, int] = {"INT8": 8, "INT4": 4}

# Module class names the library can quantize: quantlib.layers.SUPPORTED by name, without torch, and the
# embedding table (quantlib.embedding; tests/unit/test_contract.py ties them)
EMBEDDING = "Embedding"
QUANTIZABLE_TYPES: tuple[str, ...] = (
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Linear",
    EMBEDDING,
)

MAX_CALIBRATION_IMAGES = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(_Strict):
    """How a layer's input activations are quantized (ULQ)."""

    algo: Literal["ulq_quantize"] = "ulq_quantize"
    clip_max: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    clip_min: float | None = Field(default=None, lt=0, allow_inf_nan=False)
    fixed_min: bool | None = None
    dst_type: DstType = "INT8"


class WeightConfig(_Strict):
    """How a layer's weights are quantized (ARQ)."""

    algo: Literal["arq_retrain"] = "arq_retrain"
    channel_wise: bool = True
    dst_type: DstType = "INT8"


class LayerConfig(_Strict):
    """One layer's entry, keyed by its module path in the config file."""

    retrain_enable: bool = True
    retrain_data_config: DataConfig = Field(default_factory=DataConfig)
    retrain_weight_config: WeightConfig = Field(default_factory=WeightConfig)


class QuantConfig(_Strict):
    """A whole config file: global keys plus one entry per quantized layer."""

    version: Literal[1] = 1
    batch_num: int = Field(default=1, gt=0)
    # both inputs of every activation x activation matmul (attention's scores and values) quantized too;
    # not AMCT's, so off unless asked for, and written to the file only when on
    quantize_activation_matmuls: bool = False
    layers: dict[str, LayerConfig] = Field(default_factory=dict)

    def enabled_layers(self) -> dict[str, LayerConfig]:
        return {name: layer for name, layer in self.layers.items() if layer.retrain_enable}

    def to_file_dict(self) -> dict[str, object]:
        """The config in the file layout: layers inline, keyed by name, unset keys omitted."""
        out: dict[str, object] = {"version": self.version, "batch_num": self.batch_num}
        if self.quantize_activation_matmuls:
            out["quantize_activation_matmuls"] = True
        for name, layer in self.layers.items():
            out[name] = layer.model_dump(exclude_none=True)
        return out

    def write(self, path: str | os.PathLike[str]) -> None:
        """Save as a config file, the layout :func:`quantlib.config.load_config` reads back."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_file_dict(), indent=4) + "\n", encoding="utf-8")
