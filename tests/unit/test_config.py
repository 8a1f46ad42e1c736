"""The config schema (version 1) and its validation: AMCT's files parse, every mistake
is rejected with a message that names the layer, the key, the value and the choices.

These tests never need torch (layer vocabularies are plain dicts), like the API process.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quantlib.config import (
    MAX_CALIBRATION_IMAGES,
    ConfigError,
    QuantConfig,
    build_config,
    check_calibration,
    check_layers,
    load_config,
    load_simple_config,
    parse_config,
)

# The two examples of the seed document (AMCT's "Manual Tuning" page), verbatim.
SEED_TUNED = """{ "version":1, "batch_num":1, "inference/Conv2D":{ "retrain_enable":true,
"retrain_data_config":{ "algo":"ulq_quantize", "clip_max":3.0, "clip_min":-3.0 },
"retrain_weight_config":{ "algo":"arq_retrain", "channel_wise":true } },
"inference/Conv2D_1":{ "retrain_enable":true, "retrain_data_config":{ "algo":"ulq_quantize",
"clip_max":3.0, "clip_min":-3.0 }, "retrain_weight_config":{ "algo":"arq_retrain", "channel_wise":true } } }"""

SEED_DEFAULT = """{ "version":1, "batch_num":1, "conv1":{ "retrain_enable":true,
"retrain_data_config":{ "algo":"ulq_quantize", "dst_type":"INT8" },
"retrain_weight_config":{ "algo":"arq_retrain", "channel_wise":true, "dst_type":"INT8" } },
"conv2_1/expand":{ "retrain_enable":true, "retrain_data_config":{ "algo":"ulq_quantize", "dst_type":"INT8" },
"retrain_weight_config":{ "algo":"arq_retrain", "channel_wise":true, "dst_type":"INT8" } } }"""

# A model's vocabulary as check_layers sees it: module path -> class name.
MODEL_LAYERS: dict[str, str] = {
    "conv1": "Conv2d",
    "bn1": "BatchNorm2d",
    "relu": "ReLU",
    "inference.Conv2D": "Conv2d",
    "inference.Conv2D_1": "Conv2d",
    "conv2_1.expand": "Conv2d",
    "up": "ConvTranspose2d",
    "fc": "Linear",
}

VALID: dict[str, Any] = {
    "version": 1,
    "batch_num": 1,
    "conv1": {
        "retrain_enable": True,
        "retrain_data_config": {"algo": "ulq_quantize", "clip_max": 3.0, "clip_min": -3.0, "dst_type": "INT8"},
        "retrain_weight_config": {"algo": "arq_retrain", "channel_wise": True, "dst_type": "INT8"},
    },
}


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A deep copy of VALID with one mistake applied."""
    data = copy.deepcopy(VALID)
    change(data)
    return data


def data_cfg(**kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["conv1"]["retrain_data_config"].update(kv)


def weight_cfg(**kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["conv1"]["retrain_weight_config"].update(kv)


def layer_entry(**kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["conv1"].update(kv)


def top(**kv: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.update(kv)


# --------------------------------------------------------------------------- seed files


@pytest.mark.parametrize("text", [SEED_TUNED, SEED_DEFAULT], ids=["tuned", "default"])
def test_seed_examples_parse(text: str) -> None:
    """AMCT users bring these files unchanged; both must be accepted as they are."""
    config = load_config(text)
    assert config.version == 1 and config.batch_num == 1
    assert len(config.layers) == 2
    for entry in config.layers.values():
        assert entry.retrain_enable is True
        assert entry.retrain_data_config.algo == "ulq_quantize"
        assert entry.retrain_weight_config.algo == "arq_retrain"
        assert entry.retrain_weight_config.channel_wise is True
        assert entry.retrain_data_config.dst_type == "INT8"
        assert entry.retrain_weight_config.dst_type == "INT8"


def test_seed_tuned_example_keeps_clips() -> None:
    """The tuning example fixes both clips at +-3; they must reach the layer config."""
    config = load_config(SEED_TUNED)
    data = config.layers["inference/Conv2D_1"].retrain_data_config
    assert (data.clip_max, data.clip_min) == (3.0, -3.0)
    assert data.fixed_min is None  # absent: decided from the graph later


def test_seed_default_example_leaves_clips_free() -> None:
    config = load_config(SEED_DEFAULT)
    data = config.layers["conv2_1/expand"].retrain_data_config
    assert data.clip_max is None and data.clip_min is None


def test_seed_example_from_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(SEED_DEFAULT, encoding="utf-8")
    assert set(load_config(path).layers) == {"conv1", "conv2_1/expand"}
    assert set(load_config(str(path)).layers) == {"conv1", "conv2_1/expand"}


@pytest.mark.parametrize(
    ("text", "missing", "closest"),
    [
        (SEED_TUNED, "inference/Conv2D", "inference.Conv2D"),
        (SEED_DEFAULT, "conv2_1/expand", "conv2_1.expand"),
    ],
)
def test_seed_examples_fail_against_model_without_those_layers(text: str, missing: str, closest: str) -> None:
    """TensorFlow-style names do not exist in a PyTorch model: say which, and the fix."""
    config = load_config(text)
    with pytest.raises(ConfigError) as info:
        check_layers(config, MODEL_LAYERS)
    err = info.value
    assert err.field == missing
    assert f"'{missing}'" in err.message
    assert "not in the model" in err.message
    assert f"did you mean '{closest}'" in err.message


def test_check_layers_lists_quantizable_layers_when_nothing_is_close() -> None:
    config = parse_config({"version": 1, "zzzz": {}})
    with pytest.raises(ConfigError) as info:
        check_layers(config, MODEL_LAYERS)
    msg = info.value.message
    assert "'zzzz'" in msg
    for name in ("conv1", "fc", "up", "inference.Conv2D"):
        assert name in msg
    assert "bn1" not in msg and "relu" not in msg  # only layers that can be quantized are offered


def test_check_layers_accepts_model_layers() -> None:
    config = parse_config({"conv1": {}, "fc": {}, "up": {}})
    check_layers(config, MODEL_LAYERS)


@pytest.mark.parametrize(("name", "kind"), [("bn1", "BatchNorm2d"), ("relu", "ReLU")])
def test_non_quantizable_layer_is_rejected(name: str, kind: str) -> None:
    """A BatchNorm (or ReLU) named in the config cannot be quantized: say so, list the types."""
    with pytest.raises(ConfigError) as info:
        check_layers(parse_config({name: {}}), MODEL_LAYERS)
    err = info.value
    assert err.field == name
    assert f"'{name}'" in err.message and kind in err.message
    for allowed in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "Linear"):
        assert allowed in err.message


# ------------------------------------------------------------------- validation errors

# (id, mistake, expected field, substrings the message must contain)
ERRORS: list[tuple[str, Callable[[dict[str, Any]], None], str, list[str]]] = [
    (
        "unknown-layer-key",
        layer_entry(retrain_enabel=True),
        "conv1.retrain_enabel",
        ["'conv1'", "unknown key 'retrain_enabel'", "retrain_data_config", "did you mean 'retrain_enable'"],
    ),
    (
        "unknown-data-key",
        data_cfg(clip_mx=1.0),
        "conv1.retrain_data_config.clip_mx",
        ["'conv1'", "retrain_data_config", "unknown key 'clip_mx'", "fixed_min", "did you mean 'clip_max'"],
    ),
    (
        "unknown-weight-key",
        weight_cfg(chanel_wise=True),
        "conv1.retrain_weight_config.chanel_wise",
        ["'conv1'", "retrain_weight_config", "unknown key 'chanel_wise'", "did you mean 'channel_wise'"],
    ),
    (
        "clip-max-string",
        data_cfg(clip_max="3.0"),
        "conv1.retrain_data_config.clip_max",
        ["'conv1'", "clip_max", "'3.0'", "a number", "str"],
    ),
    (
        "clip-max-bool",
        data_cfg(clip_max=True),
        "conv1.retrain_data_config.clip_max",
        ["'conv1'", "clip_max", "True", "a number"],
    ),
    (
        "retrain-enable-int",
        layer_entry(retrain_enable=1),
        "conv1.retrain_enable",
        ["'conv1'", "retrain_enable", "got 1", "true or false"],
    ),
    (
        "fixed-min-string",
        data_cfg(fixed_min="true"),
        "conv1.retrain_data_config.fixed_min",
        ["'conv1'", "fixed_min", "'true'", "true or false"],
    ),
    (
        "channel-wise-int",
        weight_cfg(channel_wise=0),
        "conv1.retrain_weight_config.channel_wise",
        ["'conv1'", "channel_wise", "got 0", "true or false"],
    ),
    ("batch-num-float", top(batch_num=1.0), "batch_num", ["batch_num", "1.0", "integer greater than 0"]),
    ("batch-num-zero", top(batch_num=0), "batch_num", ["batch_num", "got 0", "greater than 0"]),
    ("batch-num-negative", top(batch_num=-2), "batch_num", ["batch_num", "-2", "greater than 0"]),
    ("batch-num-bool", top(batch_num=True), "batch_num", ["batch_num", "True", "integer"]),
    (
        "clip-max-zero",
        data_cfg(clip_max=0.0),
        "conv1.retrain_data_config.clip_max",
        ["'conv1'", "clip_max", "> 0", "0.0"],
    ),
    (
        "clip-max-negative",
        data_cfg(clip_max=-1.5),
        "conv1.retrain_data_config.clip_max",
        ["'conv1'", "clip_max", "> 0", "-1.5", "positive"],
    ),
    (
        "clip-min-zero",
        data_cfg(clip_min=0.0),
        "conv1.retrain_data_config.clip_min",
        ["'conv1'", "clip_min", "< 0", "fixed_min"],
    ),
    (
        "clip-min-positive",
        data_cfg(clip_min=0.5),
        "conv1.retrain_data_config.clip_min",
        ["'conv1'", "clip_min", "< 0", "0.5"],
    ),
    (
        "clip-max-infinite",
        data_cfg(clip_max=float("inf")),
        "conv1.retrain_data_config.clip_max",
        ["'conv1'", "clip_max", "inf", "finite"],
    ),
    (
        "clip-min-nan",
        data_cfg(clip_min=float("nan")),
        "conv1.retrain_data_config.clip_min",
        ["'conv1'", "clip_min", "nan"],
    ),
    (
        "unknown-data-algo",
        data_cfg(algo="ifmr"),
        "conv1.retrain_data_config.algo",
        ["'conv1'", "algo", "'ifmr'", "'ulq_quantize'"],
    ),
    (
        "unknown-weight-algo",
        weight_cfg(algo="ulq_quantize"),
        "conv1.retrain_weight_config.algo",
        ["'conv1'", "algo", "'ulq_quantize'", "'arq_retrain'"],
    ),
    (
        "unknown-data-dst-type",
        data_cfg(dst_type="INT16"),
        "conv1.retrain_data_config.dst_type",
        ["'conv1'", "dst_type", "'INT16'", "'INT8'", "'INT4'"],
    ),
    (
        "lowercase-weight-dst-type",
        weight_cfg(dst_type="int8"),
        "conv1.retrain_weight_config.dst_type",
        ["'conv1'", "dst_type", "'int8'", "'INT8'", "'INT4'"],
    ),
    ("version-2", top(version=2), "version", ["version", "must be 1", "got 2"]),
    ("version-string", top(version="1"), "version", ["version", "must be 1", "'1'"]),
    ("entry-list", top(conv1=[1, 2]), "conv1", ["'conv1'", "object", "[1, 2]", "retrain_enable"]),
    ("entry-string", top(conv1="on"), "conv1", ["'conv1'", "object", "'on'"]),
    (
        "fixed-min-with-clip-min",
        data_cfg(fixed_min=True, clip_min=-1.0),
        "conv1.retrain_data_config",
        ["'conv1'", "fixed_min: true", "clip_min: -1.0", "remove one"],
    ),
    (
        "section-not-object",
        layer_entry(retrain_data_config="ulq_quantize"),
        "conv1.retrain_data_config",
        ["'conv1'", "retrain_data_config", "object", "'ulq_quantize'"],
    ),
]


@pytest.mark.parametrize(("change", "field", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_error(change: Callable[[dict[str, Any]], None], field: str, expected: list[str]) -> None:
    """Each mistake: a ConfigError pointing at the field, with a message a user can act on."""
    with pytest.raises(ConfigError) as info:
        parse_config(mutated(change))
    err = info.value
    assert err.field == field
    assert err.code == "BAD_CONFIG"
    for text in expected:
        assert text in err.message, f"{text!r} not in {err.message!r}"
    assert err.to_dict() == {"code": "BAD_CONFIG", "message": err.message, "field": field}
    assert str(err) == err.message


def test_valid_config_roundtrips_through_file_layout() -> None:
    config = parse_config(VALID)
    assert config.to_file_dict() == VALID
    assert parse_config(config.to_file_dict()) == config


def test_ints_accepted_where_floats_expected() -> None:
    """JSON writers drop '.0': clip_max 6 means 6.0, and stays a float."""
    config = parse_config(mutated(data_cfg(clip_max=6, clip_min=-2)))
    data = config.layers["conv1"].retrain_data_config
    assert data.clip_max == 6.0 and isinstance(data.clip_max, float)
    assert data.clip_min == -2.0 and isinstance(data.clip_min, float)


def test_defaults_fill_an_empty_entry() -> None:
    """An empty layer entry is the default: enabled, ULQ, ARQ per channel, INT8, free clips."""
    config = parse_config({"fc": {}})
    entry = config.layers["fc"]
    assert config.version == 1 and config.batch_num == 1
    assert entry.retrain_enable is True
    assert entry.retrain_data_config.model_dump() == {
        "algo": "ulq_quantize",
        "clip_max": None,
        "clip_min": None,
        "fixed_min": None,
        "dst_type": "INT8",
    }
    assert entry.retrain_weight_config.model_dump() == {"algo": "arq_retrain", "channel_wise": True, "dst_type": "INT8"}


def test_retrain_enable_false_is_not_an_enabled_layer() -> None:
    config = parse_config({"conv1": {"retrain_enable": False}, "fc": {}})
    assert set(config.layers) == {"conv1", "fc"}
    assert set(config.enabled_layers()) == {"fc"}


def test_first_bad_layer_is_named_among_good_ones() -> None:
    data = {"fc": {}, "up": {"retrain_weight_config": {"dst_type": "INT2"}}, "conv1": {}}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.field == "up.retrain_weight_config.dst_type"
    assert "'up'" in info.value.message and "'INT2'" in info.value.message


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{"version": 1,\n  "conv1": {,}\n}', 2, 13),
        ('{"version": 1, "batch_num": 1,}', 1, 31),
        ('{\n\n"conv1": {"retrain_enable": tru}}', 3, 29),
    ],
)
def test_invalid_json_text_reports_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert info.value.field == "config"
    assert "not valid JSON" in info.value.message
    assert f"line {line}, column {column}" in info.value.message


def test_invalid_json_file_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"version": 1,\n "conv1": {"retrain_enable": true,}\n}', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 2, column 35" in info.value.message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in info.value.message and info.value.field == "config"


def test_json_text_that_is_not_an_object_is_not_taken_for_a_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("[1, 2]")
    assert "JSON object" in info.value.message and "list" in info.value.message


def test_config_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "object" in info.value.message and "list" in info.value.message


# ---------------------------------------------------------------------- calibration size


@pytest.mark.parametrize(("batch_num", "batch_size"), [(1, 50), (2, 25), (50, 1), (3, 16)])
def test_calibration_within_limit_is_accepted(batch_num: int, batch_size: int) -> None:
    check_calibration(batch_num, batch_size)


@pytest.mark.parametrize(("batch_num", "batch_size"), [(2, 32), (1, 51), (51, 1)])
def test_calibration_over_50_images_is_rejected(batch_num: int, batch_size: int) -> None:
    """AMCT advises <= 50 calibration images; we enforce it and say how to comply."""
    with pytest.raises(ConfigError) as info:
        check_calibration(batch_num, batch_size)
    msg = info.value.message
    assert info.value.field == "batch_num"
    assert f"{batch_num} x {batch_size} = {batch_num * batch_size}" in msg
    assert str(MAX_CALIBRATION_IMAGES) in msg
    suggested = max(1, MAX_CALIBRATION_IMAGES // batch_size)
    assert f"Lower batch_num to {suggested}" in msg
    check_calibration(suggested, min(batch_size, MAX_CALIBRATION_IMAGES))  # the advice works


# ------------------------------------------------------------------- simplified config

SIMPLE_YAML = """\
batch_num: 2
skip_layers: [fc]
skip_layer_types: [ConvTranspose2d]
defaults: {channel_wise: false}
type_overrides: {Conv2d: {weight_dst_type: INT4}}
layer_overrides: {conv1: {clip_max: 6, fixed_min: true, data_dst_type: INT4}}
"""


def _check_simple_result(config: QuantConfig) -> None:
    layers = config.layers
    assert config.batch_num == 2
    # every quantizable layer, and only those, gets an entry
    assert set(layers) == {"conv1", "inference.Conv2D", "inference.Conv2D_1", "conv2_1.expand", "up", "fc"}
    assert layers["fc"].retrain_enable is False  # skip_layers
    assert layers["up"].retrain_enable is False  # skip_layer_types
    assert set(config.enabled_layers()) == {"conv1", "inference.Conv2D", "inference.Conv2D_1", "conv2_1.expand"}
    for entry in layers.values():
        assert entry.retrain_weight_config.channel_wise is False  # defaults
    assert layers["conv2_1.expand"].retrain_weight_config.dst_type == "INT4"  # type override
    assert layers["conv2_1.expand"].retrain_data_config.dst_type == "INT8"
    assert layers["fc"].retrain_weight_config.dst_type == "INT8"  # not a Conv2d
    conv1 = layers["conv1"].retrain_data_config
    assert (conv1.clip_max, conv1.fixed_min, conv1.dst_type) == (6.0, True, "INT4")  # layer override
    assert layers["inference.Conv2D"].retrain_data_config.clip_max is None


def test_simple_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "simple.yaml"
    path.write_text(SIMPLE_YAML, encoding="utf-8")
    _check_simple_result(build_config(MODEL_LAYERS, load_simple_config(path)))


def test_simple_config_from_json(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "simple.json"
    path.write_text(json.dumps(yaml.safe_load(SIMPLE_YAML)), encoding="utf-8")
    _check_simple_result(build_config(MODEL_LAYERS, load_simple_config(str(path))))


def test_simple_config_layer_override_beats_type_override() -> None:
    simple = load_simple_config(
        {"type_overrides": {"Linear": {"dst_type": "INT4"}}, "layer_overrides": {"fc": {"weight_dst_type": "INT8"}}}
    )
    fc = build_config(MODEL_LAYERS, simple).layers["fc"]
    assert fc.retrain_data_config.dst_type == "INT4"
    assert fc.retrain_weight_config.dst_type == "INT8"


def test_build_config_without_simple_config_is_the_default() -> None:
    """What create_quant_retrain_config writes: all quantizable layers, enabled, INT8, per channel."""
    config = build_config(MODEL_LAYERS)
    assert set(config.layers) == {n for n, t in MODEL_LAYERS.items() if t in ("Conv2d", "ConvTranspose2d", "Linear")}
    for entry in config.layers.values():
        assert entry.retrain_enable is True
        assert entry.retrain_data_config.dst_type == "INT8" and entry.retrain_weight_config.dst_type == "INT8"
        assert entry.retrain_weight_config.channel_wise is True
    # the written form parses back to the same config
    assert parse_config(config.to_file_dict()) == config


SIMPLE_ERRORS: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("unknown-top-key", {"skip_layer": ["fc"]}, "config_defination.skip_layer", ["skip_layer", "skip_layers"]),
    (
        "unknown-override-key",
        {"layer_overrides": {"conv1": {"clip_mx": 1.0}}},
        "config_defination.layer_overrides.conv1.clip_mx",
        ["clip_mx", "clip_max"],
    ),
    ("bad-dst-type", {"defaults": {"dst_type": "INT2"}}, "config_defination.defaults.dst_type", ["'INT2'", "INT8"]),
    ("batch-num-zero", {"batch_num": 0}, "config_defination.batch_num", ["batch_num", "0"]),
    (
        "positive-clip-min",
        {"layer_overrides": {"conv1": {"clip_min": 1.0}}},
        "config_defination.layer_overrides.conv1.clip_min",
        ["clip_min", "1.0"],
    ),
    (
        "unknown-skip-type",
        {"skip_layer_types": ["Conv4d"]},
        "config_defination.skip_layer_types",
        ["'Conv4d'", "ConvTranspose1d"],
    ),
    (
        "non-quantizable-override-type",
        {"type_overrides": {"BatchNorm2d": {"dst_type": "INT4"}}},
        "config_defination.type_overrides",
        ["'BatchNorm2d'", "Conv2d"],
    ),
    ("unknown-skip-layer", {"skip_layers": ["nope"]}, "nope", ["'nope'", "not in the model"]),
    ("override-of-batchnorm", {"layer_overrides": {"bn1": {"dst_type": "INT4"}}}, "bn1", ["'bn1'", "BatchNorm2d"]),
    ("typo-in-layer-override", {"layer_overrides": {"conv_1": {}}}, "conv_1", ["'conv_1'", "did you mean 'conv1'"]),
]


@pytest.mark.parametrize(
    ("data", "field", "expected"), [e[1:] for e in SIMPLE_ERRORS], ids=[e[0] for e in SIMPLE_ERRORS]
)
def test_simple_config_errors(data: dict[str, Any], field: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(MODEL_LAYERS, load_simple_config(data))
    assert info.value.field == field
    for text in expected:
        assert text in info.value.message, f"{text!r} not in {info.value.message!r}"


def test_simple_config_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "simple.yaml"
    path.write_text("skip_layers: [fc,\n batch_num: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_simple_config(path)
    assert info.value.field == "config_defination"
    assert "not valid JSON or YAML" in info.value.message


def test_simple_config_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "simple.yaml"
    path.write_text("- fc\n- conv1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_simple_config(path)
    assert "mapping" in info.value.message


def test_simple_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_simple_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in info.value.message


# ------------------------------------------------------------------------ torch-free


def test_config_package_imports_without_torch() -> None:
    """The API process validates configs and must never import torch (seconds, GBs)."""
    code = "import quantlib.config, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo)
    assert result.returncode == 0, result.stderr
