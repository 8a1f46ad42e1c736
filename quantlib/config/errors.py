"""The one error type of config handling: a value users can act on."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config (or config_defination) that cannot be used.

    Carries a stable ``code`` for programs, a ``message`` for people that names the
    layer, the key, the value and what is allowed, and the dotted ``field`` path
    (``layer1.0.conv1.retrain_data_config.clip_max``) so an API can point at it.
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "BAD_CONFIG") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}
