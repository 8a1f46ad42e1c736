"""A config against the deploy target it is for: INT4 only where the target has int4 kernels."""

from __future__ import annotations

from quantlib.config.errors import ConfigError
from quantlib.config.schema import QuantConfig
from quantlib.spec import int4_refusal


def check_target(config: QuantConfig, target: str) -> None:
    """A :class:`ConfigError` naming the first INT4 layer ``target`` cannot deploy."""
    reason = int4_refusal(target)
    if reason is None:
        return
    for name, entry in config.enabled_layers().items():
        for key, part in (
            ("retrain_data_config", entry.retrain_data_config),
            ("retrain_weight_config", entry.retrain_weight_config),
        ):
            if part.dst_type == "INT4":
                raise ConfigError(f"layer {name}: dst_type INT4: {reason}", field=f"{name}.{key}.dst_type")
