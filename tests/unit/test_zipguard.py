"""A zip's directory is sized from its end record before zipfile parses it."""

from __future__ import annotations

import io
import zipfile

import pytest

from quantlib.inputs import DataError
from quantlib.zipguard import check_directory, directory_size


def test_the_stated_count_and_size_are_read_also_from_zip64() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(70_000):  # past 65535: the count is in the zip64 end record only
            archive.writestr(str(i), b"")
    stated = directory_size(buffer)
    assert stated is not None and stated[0] == 70_000 and 46 * 70_000 < stated[1] < 60 * 70_000
    assert buffer.tell() == 0  # left where zipfile expects to start
    assert directory_size(io.BytesIO(b"not a zip")) is None


def test_a_directory_past_the_limits_is_refused_by_name() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(10):
            archive.writestr(str(i), b"")
    check_directory(buffer, "data")
    raw = bytearray(buffer.getvalue())
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 12 : at + 16] = (64 << 20).to_bytes(4, "little")  # a 64 MiB directory
    with pytest.raises(DataError) as refused:
        check_directory(io.BytesIO(bytes(raw)), "data")
    assert refused.value.field == "data" and "67108864 bytes" in refused.value.message
