"""Dataset arrays kept on disk and memory-mapped, so a dataset larger than memory still trains.

Training reads a batch at a time (:func:`quantlib.loop.tensors` copies just the rows it
needs), so nothing requires a whole array in memory. An ``.npz`` written by
``numpy.savez`` stores each array uncompressed: such a member is mapped where it lies in
the archive. A compressed member (``savez_compressed``) is inflated once into a ``.npy``
file in the scratch folder, a chunk at a time, and mapped from there. The mappings are
read-only and shared, so they count neither as the process's data (the sandbox's
``RLIMIT_DATA`` ceiling) nor as memory the kernel cannot take back: resident pages of a
mapped file are page cache.
"""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from quantlib.inputs import DataError
from quantlib.zipguard import check_directory

# a zip entry's local header: signature, then fixed fields up to the name and extra-field lengths
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
# copied at a time when a member is inflated
_COPY_BYTES = 16 << 20
# what compressed members may inflate to, beyond the archive's own size times this: deflate reaches ~1000:1,
# so a small upload could otherwise fill the worker's disk
INFLATE_RATIO = 8
INFLATE_SLACK = 256 << 20


def map_npz(path: Path, scratch: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, memory-mapped read-only, by name (``x_train``, ...)."""
    with open(path, "rb") as stream:
        check_directory(stream, "data")
        try:
            with zipfile.ZipFile(stream) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                _check_inflated_size(members, path.stat().st_size)
                return {_key(info.filename): _map_member(path, stream, archive, info, scratch) for info in members}
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise DataError(
                f"data is not a readable .npz archive ({exc}); write it with numpy.savez", field="data"
            ) from exc


def _check_inflated_size(members: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Compressed members are inflated onto disk, up to the sizes they state (zipfile stops there)."""
    inflated = sum(info.file_size for info in members if info.compress_type != zipfile.ZIP_STORED)
    limit = INFLATE_RATIO * archive_bytes + INFLATE_SLACK
    if inflated > limit:
        raise DataError(
            f"the data's compressed arrays inflate to {inflated} bytes, more than {INFLATE_RATIO} x the archive "
            f"({archive_bytes} bytes); write it with numpy.savez (uncompressed), whose arrays are read in place",
            field="data",
        )


def _key(filename: str) -> str:
    return filename.removesuffix(".npy")


def _map_member(
    path: Path, stream: IO[bytes], archive: zipfile.ZipFile, info: zipfile.ZipInfo, scratch: Path
) -> np.ndarray:
    key = _key(info.filename)
    if info.compress_type == zipfile.ZIP_STORED:
        stream.seek(info.header_offset)
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(stream.read(_LOCAL_HEADER.size))
        if signature != _LOCAL_SIGNATURE:
            raise DataError(f"{key} is damaged in the archive (no local header); write it again", field=key)
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        return _map_npy(path, start, key)
    scratch.mkdir(parents=True, exist_ok=True)
    inflated = scratch / f"{key}.npy"
    with archive.open(info) as member, open(inflated, "wb") as out:
        shutil.copyfileobj(member, out, _COPY_BYTES)
    return _map_npy(inflated, 0, key)


def _map_npy(path: Path, start: int, key: str) -> np.ndarray:
    """The ``.npy`` whose bytes begin at ``start`` of ``path``, mapped; the header is parsed, never pickle."""
    with open(path, "rb") as stream:
        stream.seek(start)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        except ValueError as exc:
            raise DataError(f"{key} is not a readable .npy array in the archive ({exc})", field=key) from exc
        offset = stream.tell()
        end = stream.seek(0, 2)
    if dtype.hasobject:
        raise DataError(f"{key} holds Python objects, which need pickle; store plain numeric arrays", field=key)
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + needed > end:
        raise DataError(f"{key} is cut short in the archive ({end - offset} of {needed} bytes)", field=key)
    if needed == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
