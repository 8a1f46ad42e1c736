"""The config schema and its validation. Imports without torch: the API process uses it."""

from quantlib.config.errors import ConfigError
from quantlib.config.parse import check_calibration, check_layers, load_config, parse_config
from quantlib.config.schema import (
    BITS,
    EMBEDDING,
    MAX_CALIBRATION_IMAGES,
    QUANTIZABLE_TYPES,
    DataConfig,
    LayerConfig,
    QuantConfig,
    WeightConfig,
)
from quantlib.config.simple import SimpleConfig, build_config, load_simple_config
from quantlib.config.targets import check_target

__all__ = [
    "BITS",
    "MAX_CALIBRATION_IMAGES",
    "EMBEDDING",
    "QUANTIZABLE_TYPES",
    "ConfigError",
    "DataConfig",
    "LayerConfig",
    "QuantConfig",
    "SimpleConfig",
    "WeightConfig",
    "build_config",
    "check_calibration",
    "check_layers",
    "check_target",
    "load_config",
    "load_simple_config",
    "parse_config",
]
