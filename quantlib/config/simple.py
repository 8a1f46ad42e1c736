"""The simplified config (AMCT's ``config_defination``), expanded into a full config.

Writing one entry per layer is tedious for big models; this format says what differs
from the defaults: layers or layer types to skip, and overrides by type or by name.
Example (JSON or YAML)::

    batch_num: 2
    quantize_activation_matmuls: true  # attention's matmuls too (not AMCT's; off by default)
    skip_layers: [fc]
    skip_layer_types: [ConvTranspose2d]
    defaults: {channel_wise: true}
    type_overrides: {Linear: {weight_dst_type: INT4}}
    layer_overrides: {conv1: {clip_max: 6, fixed_min: true}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantlib.config.errors import ConfigError
from quantlib.config.parse import check_layers, parse_layer
from quantlib.config.schema import QUANTIZABLE_TYPES, DstType, LayerConfig, QuantConfig
from quantlib.errors import first_error


class Override(BaseModel):
    """Settings that can be changed for all layers, a layer type, or one layer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    retrain_enable: bool | None = None
    dst_type: DstType | None = Field(default=None, description="both activations and weights")
    data_dst_type: DstType | None = None
    weight_dst_type: DstType | None = None
    channel_wise: bool | None = None
    fixed_min: bool | None = None
    clip_max: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    clip_min: float | None = Field(default=None, lt=0, allow_inf_nan=False)

    def apply(self, layer: dict[str, Any]) -> None:
        data, weight = layer["retrain_data_config"], layer["retrain_weight_config"]
        if self.retrain_enable is not None:
            layer["retrain_enable"] = self.retrain_enable
        for target, value in (
            (data, self.dst_type),
            (weight, self.dst_type),
            (data, self.data_dst_type),
            (weight, self.weight_dst_type),
        ):
            if value is not None:
                target["dst_type"] = value
        for key in ("fixed_min", "clip_max", "clip_min"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.channel_wise is not None:
            weight["channel_wise"] = self.channel_wise


class SimpleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    batch_num: int = Field(default=1, gt=0)
    quantize_activation_matmuls: bool = False
    skip_layers: list[str] = Field(default_factory=list)
    skip_layer_types: list[str] = Field(default_factory=list)
    defaults: Override = Field(default_factory=Override)
    type_overrides: dict[str, Override] = Field(default_factory=dict)
    layer_overrides: dict[str, Override] = Field(default_factory=dict)


def load_simple_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> SimpleConfig:
    """Read a simplified config from a JSON/YAML file path or a mapping."""
    data: Any = source
    if not isinstance(source, Mapping):
        try:
            with open(source, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(
                f"cannot read config_defination {source!s}: {exc.strerror}", field="config_defination"
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config_defination is not valid JSON or YAML: {exc}", field="config_defination") from exc
    if not isinstance(data, Mapping):
        raise ConfigError("config_defination must be an object (a mapping)", field="config_defination")
    try:
        return SimpleConfig.model_validate(dict(data))
    except ValidationError as exc:
        err = first_error(exc)
        where = err.key
        raise ConfigError(
            f"config_defination: {where}: {err.message} (got {err.value!r}); allowed keys: "
            f"{', '.join(SimpleConfig.model_fields)}; override keys: {', '.join(Override.model_fields)}",
            field=f"config_defination.{where}",
        ) from None


def default_layer() -> dict[str, Any]:
    """The entry ``create_quant_retrain_config`` writes for every quantizable layer."""
    return LayerConfig().model_dump(exclude_none=True)


def build_config(layer_types: Mapping[str, str], simple: SimpleConfig | None = None) -> QuantConfig:
    """The full config for a model: every quantizable layer, with ``simple``'s changes applied."""
    simple = simple or SimpleConfig()
    for key, kinds in (("skip_layer_types", simple.skip_layer_types), ("type_overrides", simple.type_overrides)):
        for kind in kinds:
            if kind not in QUANTIZABLE_TYPES:
                raise ConfigError(
                    f"config_defination: {key}: unknown layer type '{kind}'; quantizable types: "
                    f"{', '.join(QUANTIZABLE_TYPES)}",
                    field=f"config_defination.{key}",
                )
    named = QuantConfig(layers={n: LayerConfig() for n in [*simple.skip_layers, *simple.layer_overrides]})
    check_layers(named, layer_types)
    layers: dict[str, LayerConfig] = {}
    for name, kind in layer_types.items():
        if kind not in QUANTIZABLE_TYPES:
            continue
        entry = default_layer()
        simple.defaults.apply(entry)
        if kind in simple.type_overrides:
            simple.type_overrides[kind].apply(entry)
        if name in simple.layer_overrides:
            simple.layer_overrides[name].apply(entry)
        if name in simple.skip_layers or kind in simple.skip_layer_types:
            entry["retrain_enable"] = False
        layers[name] = parse_layer(name, entry)
    return QuantConfig(
        batch_num=simple.batch_num, quantize_activation_matmuls=simple.quantize_activation_matmuls, layers=layers
    )
