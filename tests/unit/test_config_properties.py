"""Properties of the config parser over generated input (hypothesis).

Whatever JSON a user sends, the parser either returns a valid config or raises a
``ConfigError`` that names a field; and a parsed config written back out parses to the
same config, so the file a job records is the config it ran with.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantlib.config import ConfigError, QuantConfig, parse_config
from quantlib.config.parse import GLOBAL_KEYS, decode_json

# keys the parser knows, mixed with arbitrary text, so generated objects reach deep branches
KNOWN_KEYS = [
    *GLOBAL_KEYS,
    "conv1",
    "retrain_enable",
    "retrain_data_config",
    "retrain_weight_config",
    "algo",
    "clip_max",
    "clip_min",
    "fixed_min",
    "dst_type",
    "channel_wise",
]
KNOWN_VALUES = ["ulq_quantize", "arq_retrain", "INT8", "INT4", 1, 0, -1, 3.0, -3.0, True, False, None]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(KNOWN_VALUES)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)

dst_types = st.sampled_from(["INT8", "INT4"])
data_sections = st.fixed_dictionaries(
    {},
    optional={
        "algo": st.just("ulq_quantize"),
        "clip_max": st.floats(min_value=1e-6, max_value=1e6),
        "clip_min": st.floats(min_value=-1e6, max_value=-1e-6),
        "fixed_min": st.booleans(),
        "dst_type": dst_types,
    },
).filter(lambda section: not (section.get("fixed_min") and "clip_min" in section))
weight_sections = st.fixed_dictionaries(
    {}, optional={"algo": st.just("arq_retrain"), "channel_wise": st.booleans(), "dst_type": dst_types}
)
layers = st.fixed_dictionaries(
    {},
    optional={
        "retrain_enable": st.booleans(),
        "retrain_data_config": data_sections,
        "retrain_weight_config": weight_sections,
    },
)
layer_names = st.text(min_size=1, max_size=20).filter(lambda name: name not in GLOBAL_KEYS)
valid_configs = st.builds(
    lambda version, batch_num, entries: {**version, **batch_num, **entries},
    st.sampled_from([{}, {"version": 1}]),
    st.sampled_from([{}]) | st.integers(1, 10_000).map(lambda n: {"batch_num": n}),
    st.dictionaries(layer_names, layers, max_size=4),
)


def parse_text(text: str) -> QuantConfig:
    return parse_config(decode_json(text))


def assert_usable(error: ConfigError) -> None:
    assert error.code == "BAD_CONFIG"
    assert error.field, f"no field in {error.message!r}"
    assert len(error.message) > 15


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_parses_or_is_a_config_error_naming_a_field(value: Any) -> None:
    try:
        config = parse_text(json.dumps(value))
    except ConfigError as error:
        assert_usable(error)
        return
    assert isinstance(value, dict) and config.version == 1 and config.batch_num >= 1


@settings(max_examples=200, deadline=None)
@given(valid_configs)
def test_valid_configs_parse_and_round_trip(value: dict[str, Any]) -> None:
    config = parse_text(json.dumps(value))
    assert set(config.layers) == set(value) - set(GLOBAL_KEYS)
    dumped = config.to_file_dict()
    again = parse_text(json.dumps(dumped))
    assert again == config
    assert again.to_file_dict() == dumped


@settings(max_examples=300, deadline=None)
@given(valid_configs, st.data())
def test_one_bad_value_is_named_by_its_field(value: dict[str, Any], data: st.DataObject) -> None:
    """Replace one leaf of a valid config by any JSON value: valid still, or an error on that path."""
    paths = list(_leaf_paths(value))
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    replacement = data.draw(json_values)
    broken = json.loads(json.dumps(value))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    try:
        parse_text(json.dumps(broken))
    except ConfigError as error:
        assert_usable(error)
        dotted = ".".join(path)
        assert dotted.startswith(error.field) or error.field.startswith(dotted), (error.field, dotted)


def _leaf_paths(value: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            paths += _leaf_paths(item, (*prefix, key))
        else:
            paths.append((*prefix, key))
    return paths
