"""How large a zip's directory is, read from its end record before ``zipfile`` parses it.

``zipfile.ZipFile`` builds an object for every entry of the central directory as it opens
an archive: an upload of a few hundred MB of empty entries costs gigabytes of memory before
any check could look at it. The end-of-central-directory record (and its zip64 twin) states
the entry count and the directory's size in a few bytes at the end of the file; zipfile
parses as many entries as that size holds, whatever the count says, so both are bounded
before it opens the archive. Standard library only: the API uses it.
"""

from __future__ import annotations

import struct
from typing import IO

from quantlib.errors import QuantlibError
from quantlib.inputs import DataError

# the most entries any upload may hold: a .pt2 has hundreds, an image dataset of 2 GiB ~100 000;
# and the largest directory, ~85 bytes an entry with a 40-character name (an entry takes 46 at least)
MAX_ENTRIES = 200_000
MAX_DIRECTORY_BYTES = 16 << 20
_END = b"PK\x05\x06"
_END_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"


def directory_size(stream: IO[bytes]) -> tuple[int, int] | None:
    """The entry count and the central directory's size in bytes that the archive's end record states;
    None where there is no end record (not a zip)."""
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(max(0, size - _END_SIZE - 0xFFFF))  # the record, and a comment of up to 64 KiB after it
    tail = stream.read()
    stream.seek(0)
    at = tail.rfind(_END)
    if at < 0 or len(tail) - at < _END_SIZE:
        return None
    count, directory = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        (end64,) = struct.unpack_from("<Q", tail, locator + 8)
        stream.seek(end64)
        record = stream.read(56)
        stream.seek(0)
        if len(record) == 56 and record[:4] == _ZIP64_END:
            count, directory = struct.unpack_from("<QQ", record, 32)
    return int(count), int(directory)


def check_directory(stream: IO[bytes], field: str, error: type[QuantlibError] = DataError) -> None:
    """Refuse a zip whose directory states more than :data:`MAX_ENTRIES` entries or
    :data:`MAX_DIRECTORY_BYTES` bytes, as ``error`` naming ``field``."""
    stated = directory_size(stream)
    if stated is None:
        return
    count, directory = stated
    if count > MAX_ENTRIES or directory > MAX_DIRECTORY_BYTES:
        raise error(
            f"{field} is a zip of {count} entries in a directory of {directory} bytes; at most {MAX_ENTRIES} "
            f"entries and {MAX_DIRECTORY_BYTES} bytes are read",
            field=field,
        )
