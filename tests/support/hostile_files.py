"""Upload files built to hurt a server: zip bombs, lying array headers, truncated archives.

Built in memory and quickly (a 1 GiB bomb in tens of milliseconds), so a table of bad
inputs can use many of them without slowing the suite.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np

_CHUNK = 1 << 20


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A valid ``.npy`` version 1.0 header declaring ``shape``, padded as numpy pads it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def zip_bomb(name: str, unpacked_bytes: int, head: bytes = b"", extra: dict[str, bytes] | None = None) -> bytes:
    """A zip whose member ``name`` inflates to ``unpacked_bytes`` (``head`` then zeros).

    The deflate stream is one compressed chunk repeated: after a full flush the
    compressor's state is reset, so every further chunk of zeros encodes identically.
    The CRC is left 0: a reader that got that far has already inflated everything.
    """
    assert unpacked_bytes % _CHUNK == 0 and len(head) <= _CHUNK
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(head + bytes(_CHUNK - len(head))) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(bytes(_CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = first + rest * (unpacked_bytes // _CHUNK - 1) + compressor.flush()
    return _raw_zip({**(extra or {})}, name, stream, unpacked_bytes)


def _raw_zip(stored: dict[str, bytes], name: str, deflated: bytes, unpacked: int) -> bytes:
    """``stored`` members as they are, then ``name`` with its ready-made deflate stream."""
    out = io.BytesIO()
    entries: list[tuple[bytes, int, int, int, int, int]] = []  # name, method, crc, packed, size, offset
    for member, payload in stored.items():
        entries.append((member.encode(), 0, zlib.crc32(payload), len(payload), len(payload), out.tell()))
        out.write(_local_header(*entries[-1][:5]) + payload)
    entries.append((name.encode(), 8, 0, len(deflated), unpacked, out.tell()))
    out.write(_local_header(*entries[-1][:5]) + deflated)
    directory = out.tell()
    for member, method, crc, packed, size, offset in entries:
        out.write(
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                packed,
                size,
                len(member),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + member
        )
    size = out.tell() - directory
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), size, directory, 0))
    return out.getvalue()


def _local_header(name: bytes, method: int, crc: int, packed: int, size: int) -> bytes:
    return struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, packed, size, len(name), 0) + name


def npz_bomb(unpacked_bytes: int) -> bytes:
    """An ``.npz`` whose ``x_train`` is a valid float32 array of ``unpacked_bytes`` zeros, deflated."""
    header = npy_header((unpacked_bytes // 4,))
    count = (unpacked_bytes - len(header)) // 4
    assert len(npy_header((count,))) == len(header)
    return zip_bomb("x_train.npy", unpacked_bytes, npy_header((count,)))


def pt2_bomb(unpacked_bytes: int) -> bytes:
    """A ``.pt2``-looking archive with one weight file that inflates to ``unpacked_bytes``."""
    marker = {"archive/archive_format": b"pt2", "archive/models/model.json": b"{}"}
    return zip_bomb("archive/data/weights/weight_0", unpacked_bytes, extra=marker)


def npz_lying_shape(shape: tuple[int, ...]) -> bytes:
    """An ``.npz`` whose ``x_train`` header declares ``shape`` but holds 16 bytes."""
    return zip_of({"x_train.npy": npy_header(shape) + bytes(16)})


def npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A bare ``.npy`` (no zip) whose header declares ``shape`` but holds 16 bytes: numpy would allocate it all."""
    return npy_header(shape) + bytes(16)


def npz_corrupt_deflate() -> bytes:
    """An ``.npz`` whose ``x_train`` is a correct header and size, deflated, with its stream broken midway."""
    count = 1 << 18
    payload = npy_header((count,)) + bytes(4 * count)
    deflated = bytearray(zlib.compress(payload, 9)[2:-4])  # raw deflate, as zip stores it
    middle = len(deflated) // 2
    deflated[middle : middle + 8] = b"\xff" * 8
    return _raw_zip({}, "x_train.npy", bytes(deflated), len(payload))


def zip_stating_directory(entries: int, directory_bytes: int, members: dict[str, bytes] | None = None) -> bytes:
    """A valid zip whose end record is rewritten to state ``entries`` entries in a directory of
    ``directory_bytes`` (what a zip of millions of empty entries states, without its megabytes)."""
    raw = bytearray(zip_of(members or {"x_train.npy": b""}))
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 8 : at + 16] = struct.pack("<HHI", min(entries, 0xFFFF), min(entries, 0xFFFF), directory_bytes)
    return bytes(raw)
