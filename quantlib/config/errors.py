"""The one error type of config handling: a value users can act on."""

from __future__ import annotations

from quantlib.errors import QuantlibError


class ConfigError(QuantlibError):
    """A config (or config_defination) that cannot be used.

    The message names the layer, the key, the value and what is allowed; ``field`` is
    the dotted path (``layer1.0.conv1.retrain_data_config.clip_max``).
    """

    code = "BAD_CONFIG"
