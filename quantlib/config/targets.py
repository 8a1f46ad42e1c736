"""A config against the deploy target it is for: INT4 and int8 tables only where the target has kernels."""

from __future__ import annotations

from collections.abc import Mapping

from quantlib.config.errors import ConfigError
from quantlib.config.schema import EMBEDDING, QuantConfig
from quantlib.spec import refusal


def check_target(config: QuantConfig, target: str, layer_types: Mapping[str, str] | None = None) -> None:
    """A :class:`ConfigError` naming the first enabled layer ``target`` cannot deploy: an INT4 layer, or an
    embedding table on a target without int8 gathers. That second check needs ``layer_types`` (module path
    -> class name, from the loaded model); the API, which never loads one, checks INT4 only."""
    int4 = refusal(target, "int4")
    gather = refusal(target, "int8_gather")
    for name, entry in config.enabled_layers().items():
        if gather is not None and layer_types is not None and layer_types.get(name) == EMBEDDING:
            raise ConfigError(f"layer {name}: Embedding: {gather}", field=f"{name}.retrain_enable")
        if int4 is None:
            continue
        for key, part in (
            ("retrain_data_config", entry.retrain_data_config),
            ("retrain_weight_config", entry.retrain_weight_config),
        ):
            if part.dst_type == "INT4":
                raise ConfigError(f"layer {name}: dst_type INT4: {int4}", field=f"{name}.{key}.dst_type")
