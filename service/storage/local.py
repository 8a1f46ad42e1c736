"""Artifacts in a local directory: the embedded default, and what a shared volume gives."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from service.errors import NotFound
from service.storage.base import CHUNK_SIZE, HashingReader, validate_key, validate_prefix

# '~' cannot appear in a key, so a half-written file never shows up as one
_PARTIAL = "~partial-"


class LocalStore:
    """Keys are paths below ``root``; a file appears only once fully written (atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_stream(self, key: str, fileobj: BinaryIO) -> tuple[int, str]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = HashingReader(fileobj)
        fd, partial = tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return reader.size, reader.sha256

    def open_stream(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"no stored object {key!r}", field="key") from None
        return _chunks(handle)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no stored object {key!r}", field="key")
        return path.stat().st_size

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """Local files have no URL of their own: the API streams them."""
        validate_key(key)
        return None

    def list(self, prefix: str = "") -> Iterator[str]:
        # walk only the folder the prefix names up to its last '/', not the whole store
        start = self.root / validate_prefix(prefix).rpartition("/")[0]
        if not start.is_dir():
            return iter(())
        keys = (
            path.relative_to(self.root).as_posix()
            for path in start.rglob("*")
            if path.is_file() and not path.name.startswith(_PARTIAL)
        )
        return iter(sorted(key for key in keys if key.startswith(prefix)))


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk
