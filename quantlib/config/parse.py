"""Reading config files and turning every mistake into a message that says the fix.

The file layout mixes global keys (``version``, ``batch_num``) with layer entries keyed
by module path, so it is split here before pydantic checks each part.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from quantlib.config.errors import ConfigError
from quantlib.config.schema import (
    MAX_CALIBRATION_IMAGES,
    QUANTIZABLE_TYPES,
    DataConfig,
    LayerConfig,
    QuantConfig,
    WeightConfig,
)
from quantlib.errors import QuantlibError, first_error

GLOBAL_KEYS = ("version", "batch_num", "quantize_activation_matmuls")
_SECTIONS: dict[str, type[BaseModel]] = {
    "retrain_data_config": DataConfig,
    "retrain_weight_config": WeightConfig,
}
_TYPE_NAMES = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "dict_type": "an object",
    "model_type": "an object",
    "string_type": "a string",
}


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> QuantConfig:
    """Parse a config file path, JSON text or already-decoded mapping."""
    if isinstance(source, Mapping):
        return parse_config(source)
    text = str(source)
    if text.lstrip()[:1] not in ("{", "["):
        try:
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source!s}: {exc.strerror}", field="config") from exc
    return parse_config(decode_json(text))


def decode_json(text: str) -> Mapping[str, Any]:
    data = strict_json(text, field="config")
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a JSON object, got {type(data).__name__}", field="config")
    return data


def strict_json(text: str, *, field: str, error: type[QuantlibError] = ConfigError) -> Any:
    """JSON as RFC 8259 has it, as an ``error`` (a :class:`ConfigError`) naming ``field`` when it is not.

    Python's parser also takes ``NaN``/``Infinity``, turns ``1e999`` into infinity and
    fails with ``ValueError`` or ``RecursionError`` (not ``JSONDecodeError``) on huge
    integers and deep nesting; user input gets none of that.
    """
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        message = f"{field} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise error(message, field=field) from exc
    except RecursionError as exc:
        raise error(f"{field} is nested too deeply to be a {field}", field=field) from exc
    except ValueError as exc:
        raise error(f"{field} is not usable JSON: {exc}", field=field) from exc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number; use a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def parse_config(data: Mapping[str, Any]) -> QuantConfig:
    """Validate a decoded config file; raise :class:`ConfigError` on the first problem."""
    version = data.get("version", 1)
    if type(version) is not int or version != 1:
        raise ConfigError(f"version must be 1 (the only config version), got {version!r}", field="version")
    batch_num = data.get("batch_num", 1)
    if type(batch_num) is not int or batch_num <= 0:
        raise ConfigError(
            f"batch_num must be an integer greater than 0, got {batch_num!r}; calibration uses "
            f"batch_num x batch_size <= {MAX_CALIBRATION_IMAGES} images",
            field="batch_num",
        )
    if "" in data:
        raise ConfigError(
            "a layer entry has an empty name; key each layer by its module path, e.g. 'layer1.0.conv1'",
            field="config",
        )
    matmuls = data.get("quantize_activation_matmuls", False)
    if type(matmuls) is not bool:
        raise ConfigError(
            f"quantize_activation_matmuls must be true or false, got {matmuls!r}", field="quantize_activation_matmuls"
        )
    layers = {name: parse_layer(name, entry) for name, entry in data.items() if name not in GLOBAL_KEYS}
    return QuantConfig(version=1, batch_num=batch_num, quantize_activation_matmuls=matmuls, layers=layers)


def parse_layer(name: str, entry: Any) -> LayerConfig:
    """Validate one layer entry, section by section, so messages can name the section."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"layer '{name}': the entry must be an object with retrain_enable, retrain_data_config and "
            f"retrain_weight_config, got {entry!r}",
            field=name,
        )
    sections: dict[str, Any] = {}
    for key, value in entry.items():
        if key in _SECTIONS:
            sections[key] = _parse_model(_SECTIONS[key], value, f"{name}.{key}", f"layer '{name}': {key}")
        elif key == "retrain_enable":
            sections[key] = value
        else:
            allowed = ["retrain_enable", *_SECTIONS]
            raise ConfigError(
                f"layer '{name}': unknown key '{key}'; allowed keys: {', '.join(allowed)}{_did_you_mean(key, allowed)}",
                field=f"{name}.{key}",
            )
    layer: LayerConfig = _parse_model(LayerConfig, sections, name, f"layer '{name}'")
    data = layer.retrain_data_config
    if data.fixed_min and data.clip_min is not None:
        raise ConfigError(
            f"layer '{name}': retrain_data_config has fixed_min: true, which pins the lower bound at 0, "
            f"and also clip_min: {data.clip_min!r}; remove one of them",
            field=f"{name}.retrain_data_config",  # the two keys together are the mistake
        )
    return layer


def _parse_model(model: type[BaseModel], value: Any, field: str, where: str) -> Any:
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be an object, got {value!r}", field=field)
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise _friendly(exc, model, field, where) from None


def _friendly(exc: ValidationError, model: type[BaseModel], field: str, where: str) -> ConfigError:
    err = first_error(exc)
    key, value, kind = err.key, err.value, err.kind
    path = f"{field}.{key}" if key else field
    if kind == "extra_forbidden":
        allowed = list(model.model_fields)
        return ConfigError(
            f"{where}: unknown key '{key}'; allowed keys: {', '.join(allowed)}{_did_you_mean(key, allowed)}",
            field=path,
        )
    if kind == "literal_error":
        expected = err.context.get("expected", "")
        return ConfigError(f"{where}: {key} must be {expected}, got {value!r}", field=path)
    if kind in ("greater_than", "less_than"):
        op, bound = (">", err.context["gt"]) if kind == "greater_than" else ("<", err.context["lt"])
        hint = " (clip_max is the upper clip and must be positive)" if key == "clip_max" else ""
        hint = (
            " (clip_min is the lower clip and must be negative; use fixed_min: true for 0)"
            if key == "clip_min"
            else hint
        )
        return ConfigError(f"{where}: {key} must be {op} {bound}, got {value!r}{hint}", field=path)
    if kind in _TYPE_NAMES:
        return ConfigError(
            f"{where}: {key} must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__})", field=path
        )
    return ConfigError(f"{where}: {key}: {err.message} (got {value!r})", field=path)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_layers(config: QuantConfig, layer_types: Mapping[str, str]) -> None:
    """Reject layer names the model lacks, or that name layers we cannot quantize.

    ``layer_types`` maps every module path of the model to its class name.
    """
    quantizable = sorted(n for n, t in layer_types.items() if t in QUANTIZABLE_TYPES)
    for name in config.layers:
        kind = layer_types.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, quantizable, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"quantizable layers: {', '.join(quantizable[:20])}"
            if len(quantizable) > 20 and not close:
                hint += f" and {len(quantizable) - 20} more"
            raise ConfigError(f"layer '{name}' is not in the model; {hint}", field=name)
        if kind not in QUANTIZABLE_TYPES:
            raise ConfigError(
                f"layer '{name}' is a {kind}, which cannot be quantized; quantizable types: "
                f"{', '.join(QUANTIZABLE_TYPES)}",
                field=name,
            )


def check_calibration(batch_num: int, batch_size: int) -> None:
    """AMCT's advice made a rule: calibration sees at most 50 images."""
    if batch_num * batch_size > MAX_CALIBRATION_IMAGES:
        raise ConfigError(
            f"calibration would use batch_num x batch_size = {batch_num} x {batch_size} = "
            f"{batch_num * batch_size} images; the limit is {MAX_CALIBRATION_IMAGES}. Lower batch_num "
            f"to {max(1, MAX_CALIBRATION_IMAGES // batch_size)} or the batch size",
            field="batch_num",
        )
