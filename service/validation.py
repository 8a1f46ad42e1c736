"""Torch-free checks of submitted inputs, so bad uploads fail at submission, not on a GPU.

The model is only checked to be a zip archive (what ``torch.export.save`` writes); it is
never unpickled here: uploaded models are untrusted and only a sandboxed worker loads them.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from typing import IO

from quantlib.config import ConfigError, QuantConfig, check_calibration, parse_config
from quantlib.config.parse import decode_json
from quantlib.data import load_dataset
from service.errors import InvalidArgument
from service.schemas import JobSpec, parse_job_spec


def check_model(stream: IO[bytes]) -> None:
    """A ``.pt2`` file is a zip archive; anything else cannot be an exported program."""
    is_zip = zipfile.is_zipfile(stream)
    stream.seek(0)
    if not is_zip:
        raise InvalidArgument(
            "model is not a .pt2 archive; save the model with "
            "torch.export.save(torch.export.export(model, args), path)",
            field="model",
        )


def check_data(stream: IO[bytes]) -> None:
    """Keys, dtypes, shapes and values of an ``.npz`` dataset (quantlib's own rules)."""
    load_dataset(stream)
    stream.seek(0)


def parse_spec_text(text: str | None) -> JobSpec:
    """The job spec from its JSON text; absent means all defaults."""
    if text is None or not text.strip():
        return parse_job_spec({})
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"spec is not valid JSON: {exc.msg} at line {exc.lineno}", field="spec", code="BAD_SPEC")
    if not isinstance(values, Mapping):
        raise ConfigError("spec must be a JSON object", field="spec", code="BAD_SPEC")
    return parse_job_spec(values)


def parse_config_text(text: str | None, spec: JobSpec) -> QuantConfig | None:
    """The quantization config (``None`` = default), checked against the calibration image limit."""
    config = parse_config(decode_json(text)) if text is not None else None
    check_calibration(config.batch_num if config else 1, spec.batch_size)
    return config

