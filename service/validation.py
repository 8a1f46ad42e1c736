"""Torch-free checks of submitted inputs, so bad uploads fail at submission, not on a GPU.

The model is only checked to be a zip archive laid out as ``torch.export.save`` writes
it, from the zip's directory alone; it is never unpickled or inflated here: uploaded models are untrusted and only a sandboxed worker loads them.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from typing import IO

import numpy as np

from quantlib.config import ConfigError, QuantConfig, check_calibration, parse_config
from quantlib.config.parse import decode_json, strict_json
from quantlib.data import DataError, load_dataset
from quantlib.pt2archive import SAVE_A_MODEL, check_archive
from service.errors import InvalidArgument, PayloadTooLarge
from service.schemas import JobSpec, parse_job_spec


def check_model(stream: IO[bytes], max_unpacked_bytes: int) -> None:
    """A ``.pt2`` file is a zip archive holding a torch.export program of plain tensors, nothing to unpickle.

    The zip's directory is checked first, so a zip bomb costs nothing here; then the
    payload configs (small JSON) are read to refuse pickled entries at submission. The
    graph itself is checked by the worker, which reads it anyway.
    """
    archive = _open_zip(stream)
    if archive is None:
        raise InvalidArgument(f"model is not a .pt2 archive; {SAVE_A_MODEL}", field="model")
    with archive:
        if not any(name.rpartition("/")[2] == "archive_format" for name in archive.namelist()):
            raise InvalidArgument(
                f"model is a zip archive but not a torch.export program (it has no archive_format entry); "
                f"{SAVE_A_MODEL}",
                field="model",
            )
        _check_unpacked_size(archive, max_unpacked_bytes, "model")
        check_archive(archive, check_graph=False)
    stream.seek(0)


def check_data(stream: IO[bytes], max_unpacked_bytes: int) -> None:
    """Keys, dtypes, shapes and values of an ``.npz`` dataset (quantlib's own rules).

    Before numpy reads anything, the zip directory and each array's header are checked:
    the whole archive must unpack within ``max_unpacked_bytes`` and every header must
    declare exactly the bytes its member holds, so neither a zip bomb nor a header
    claiming a terabyte makes this process allocate more than the upload itself.
    """
    archive = _open_zip(stream)
    if archive is not None:
        with archive:
            _check_unpacked_size(archive, max_unpacked_bytes, "data")
            for info in archive.infolist():
                _check_array_header(archive, info)
    stream.seek(0)
    load_dataset(stream)
    stream.seek(0)



def _open_zip(stream: IO[bytes]) -> zipfile.ZipFile | None:
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    finally:
        stream.seek(0)


def _check_unpacked_size(archive: zipfile.ZipFile, limit: int, field: str) -> None:
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > limit:
        raise PayloadTooLarge(
            f"{field} unpacks to {unpacked} bytes; at most {limit} bytes are accepted unpacked "
            "(upload it uncompressed, or smaller)",
            field=field,
        )


def _check_array_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """An ``.npy`` member's declared shape and dtype must account for exactly its stored bytes."""
    key = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            stored = info.file_size - member.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{key} is not a readable .npy array ({exc}); write the data with numpy.savez", field=key) from exc
    if dtype.hasobject:
        return  # refused by load_dataset, which never unpickles
    declared = math.prod(shape) * dtype.itemsize
    if declared != stored:
        raise DataError(
            f"{key} declares shape {shape} of {dtype} ({declared} bytes) but holds {stored} bytes; "
            "the archive is damaged, write it again with numpy.savez",
            field=key,
        )


def parse_spec_text(text: str | None) -> JobSpec:
    """The job spec from its JSON text; absent means all defaults."""
    if text is None or not text.strip():
        return parse_job_spec({})
    values = strict_json(text, field="spec", code="BAD_SPEC")
    if not isinstance(values, Mapping):
        raise ConfigError("spec must be a JSON object", field="spec", code="BAD_SPEC")
    return parse_job_spec(values)


def parse_config_text(text: str | None, spec: JobSpec) -> QuantConfig | None:
    """The quantization config (``None`` = default), checked against the calibration image limit."""
    config = parse_config(decode_json(text)) if text is not None else None
    check_calibration(config.batch_num if config else 1, spec.batch_size)
    return config

