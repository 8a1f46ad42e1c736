"""Torch-free checks of submitted inputs, so bad uploads fail at submission, not on a GPU.

The model is checked from its zip directory and payload configs (:mod:`quantlib.pt2archive`);
it is never unpickled or loaded here: uploaded models are untrusted and only a sandboxed
worker loads them. Data is checked in bounded memory, never held whole.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from quantlib.config import QuantConfig, check_calibration, check_target, parse_config
from quantlib.config.parse import decode_json, strict_json
from quantlib.data import DataError, check_structure, check_values
from quantlib.errors import SpecError
from quantlib.images import archive_listing, is_image_archive
from quantlib.inputs import InputSpec
from quantlib.pt2archive import SAVE_A_MODEL, ModelError, check_archive, program_inputs
from quantlib.zipguard import check_directory
from service.api.schemas import JobSpec, parse_job_spec
from service.errors import InvalidArgument, PayloadTooLarge

# bytes of an array read at a time while its values are checked
VALUE_CHUNK_BYTES = 8 << 20
NPY_MAGIC = b"\x93NUMPY"
# the largest graph read at submission to learn the model's inputs: MiniLM's (6 layers) is 0.5 MB and
# parsing it peaks at 2 MiB; a larger one's inputs are checked by the worker
GRAPH_BYTES = 8 << 20


def check_model(stream: IO[bytes], max_unpacked_bytes: int) -> list[InputSpec] | None:
    """A ``.pt2`` file is a zip archive holding a torch.export program of plain tensors, nothing to unpickle;
    returns the inputs the program takes (None for a graph too large to read here).

    The zip's directory is checked first, so a zip bomb costs nothing here; then the
    payload configs (small JSON) are read to refuse pickled entries at submission, and a
    graph of up to :data:`GRAPH_BYTES` for the program's inputs. Its operators are checked by
    the worker, which reads it anyway.
    """
    check_directory(stream, "model", ModelError)
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
        inputs = program_inputs(archive, GRAPH_BYTES)
    stream.seek(0)
    return inputs


def check_data(stream: IO[bytes], max_unpacked_bytes: int) -> Mapping[str, np.ndarray] | None:
    """Keys, dtypes, shapes and values of an ``.npz`` dataset (quantlib's rules), in bounded memory.

    The zip directory first (a zip bomb costs nothing), then each member's ``.npy`` header,
    which must declare exactly the bytes the member holds. The structure is checked on
    zero-memory stand-ins of the declared shapes, then the values a chunk of whole samples
    at a time: no array is ever held whole, so concurrent large uploads cost a chunk each.
    Returns the stand-ins, by key, for :func:`quantlib.data.check_inputs`. An archive of images is
    checked for its layout only (:func:`quantlib.images.archive_listing`; None is returned): its
    arrays exist once the worker has decoded and preprocessed the images.
    """
    check_directory(stream, "data")
    if is_image_archive(stream):
        _check_image_archive(stream, max_unpacked_bytes)
        return None
    archive = _open_zip(stream)
    if archive is None:
        raise DataError(_not_an_npz(stream), field="data")
    with archive:
        _check_unpacked_size(archive, max_unpacked_bytes, "data")
        headers = {info.filename.removesuffix(".npy"): _array_header(archive, info) for info in archive.infolist()}
        stand_ins = {key: np.broadcast_to(np.zeros((), h.dtype), h.shape) for key, h in headers.items()}
        check_structure(stand_ins)
        for key, header in headers.items():
            _check_member_values(archive, key, header)
    stream.seek(0)
    return stand_ins


def _check_image_archive(stream: IO[bytes], max_unpacked_bytes: int) -> None:
    archive = _open_zip(stream)
    if archive is not None:
        with archive:
            _check_unpacked_size(archive, max_unpacked_bytes, "data")
    archive_listing(stream)
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


@dataclass(frozen=True)
class _Header:
    """What an ``.npy`` member declares, and where in the archive it is."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _not_an_npz(stream: IO[bytes]) -> str:
    if stream.read(len(NPY_MAGIC)) == NPY_MAGIC:
        return "data is a single .npy array, not an .npz archive; write it with numpy.savez(path, x_train=..., y_train=...)"
    return (
        "data is not a readable .npz archive (not a zip file), nor a .zip or uncompressed .tar of images; "
        "write arrays with numpy.savez"
    )


def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(member)
    return shape, fortran_order, dtype


def _array_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Header:
    """An ``.npy`` member's declared shape and dtype, which must account for exactly its stored bytes."""
    key = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as member:
            shape, fortran_order, dtype = _read_header(member)
            stored = info.file_size - member.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{key} is not a readable .npy array ({exc}); write the data with numpy.savez", field=key
        ) from exc
    if dtype.hasobject:
        raise DataError(f"{key} holds Python objects, which need pickle; store plain numeric arrays", field=key)
    if fortran_order and len(shape) > 1:
        raise DataError(
            f"{key} is stored in Fortran (column-major) order; save numpy.ascontiguousarray({key}) instead", field=key
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared != stored:
        raise DataError(
            f"{key} declares shape {shape} of {dtype} ({declared} bytes) but holds {stored} bytes; "
            "the archive is damaged, write it again with numpy.savez",
            field=key,
        )
    return _Header(info, shape, dtype)


def _check_member_values(archive: zipfile.ZipFile, key: str, header: _Header) -> None:
    """quantlib's value rules on one member, read ``VALUE_CHUNK_BYTES`` of whole samples at a time."""
    sample_bytes = math.prod(header.shape[1:]) * header.dtype.itemsize
    per_chunk = max(1, VALUE_CHUNK_BYTES // max(sample_bytes, 1))
    try:
        with archive.open(header.info) as member:
            _read_header(member)
            for first in range(0, header.shape[0], per_chunk):
                count = min(per_chunk, header.shape[0] - first)
                raw = member.read(count * sample_bytes)
                chunk = np.frombuffer(raw, header.dtype).reshape(count, *header.shape[1:])
                check_values(key, chunk, first)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{key} is damaged in the archive ({exc}); write it again with numpy.savez", field=key) from exc


def parse_spec_text(text: str | None) -> JobSpec:
    """The job spec from its JSON text; absent means all defaults."""
    if text is None or not text.strip():
        return parse_job_spec({})
    values = strict_json(text, field="spec", error=SpecError)
    if not isinstance(values, Mapping):
        raise SpecError("spec must be a JSON object", field="spec")
    return parse_job_spec(values)


def parse_config_text(text: str | None, spec: JobSpec) -> QuantConfig | None:
    """The quantization config (``None`` = default), checked against the calibration image limit."""
    config = parse_config(decode_json(text)) if text is not None else None
    check_calibration(config.batch_num if config else 1, spec.batch_size)
    if config is not None:
        check_target(config, spec.target)
    return config
