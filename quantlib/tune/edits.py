"""The tuner's changes written into a config, and what a config costs in weight bits.

Every config the tuner tries goes through :func:`quantlib.config.parse_config`, so the
one it leaves in ``out_dir`` is valid and reusable as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from quantlib.config import BITS, QuantConfig, parse_config

FLOAT_BITS = 32


def with_changes(
    base: QuantConfig,
    floats: Iterable[str],
    clips: Mapping[str, tuple[float, float | None]],
    int4: Iterable[str],
) -> QuantConfig:
    """``base`` with layers left in float, fixed clips and INT4 weights."""
    data = base.to_file_dict()
    for name in floats:
        data[name]["retrain_enable"] = False  # type: ignore[index]
    for name, (clip_max, clip_min) in clips.items():
        entry = data[name]["retrain_data_config"]  # type: ignore[index]
        entry["clip_max"] = _readable(clip_max)
        if clip_min is not None:
            entry["clip_min"] = _readable(clip_min)
    for name in int4:
        data[name]["retrain_weight_config"]["dst_type"] = "INT4"  # type: ignore[index]
    return parse_config(data)


def _readable(value: float) -> float:
    """Six significant digits: the config is for people too."""
    return float(f"{value:.6g}")


def float_layers(config: QuantConfig) -> list[str]:
    return [name for name, entry in config.layers.items() if not entry.retrain_enable]


def int4_layers(config: QuantConfig) -> list[str]:
    return [name for name, entry in config.enabled_layers().items() if entry.retrain_weight_config.dst_type == "INT4"]


def avg_weight_bits(config: QuantConfig, params: Mapping[str, int]) -> float:
    """Bits per weight over the config's layers, weighted by their parameter counts."""
    total = sum(params[name] for name in config.layers)
    bits = sum(
        params[name] * (BITS[entry.retrain_weight_config.dst_type] if entry.retrain_enable else FLOAT_BITS)
        for name, entry in config.layers.items()
    )
    return bits / total if total else float(FLOAT_BITS)
