"""Artifacts in a local directory: the embedded default, and what a shared volume gives."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from service.artifacts.base import CHUNK_SIZE, HashingReader, validate_key, validate_prefix
from service.errors import NotFound, StorageFull, WrongState
from service.server.offload import off_loop

# A file being written is '.partial-<random>' beside its key: a key of its own that the service
# never asks for, so the real key appears only once complete, while the partial file of a
# killed process is listed like any orphan and `qat admin gc` removes it.
_PARTIAL = ".partial-"
# no space, over quota, over the process's file size limit: the store is full for this write
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class LocalStore:
    """Keys are paths below ``root``; a file appears only once fully written (atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_stream(self, key: str, fileobj: IO[bytes]) -> tuple[int, str]:
        """Raises ``StorageFull`` when the disk is, with no partial file left behind."""
        return off_loop(self._put, key, fileobj)  # gigabytes of disk and hashing: off the server's loop

    def _put(self, key: str, fileobj: IO[bytes]) -> tuple[int, str]:
        path = self._path(key)
        reader = HashingReader(fileobj)
        with _disk_full_as_error(key):
            fd, partial = self._partial_beside(path)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := reader.read(CHUNK_SIZE):
                        out.write(chunk)
                os.replace(partial, path)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
        return reader.size, reader.sha256

    @staticmethod
    def _partial_beside(path: Path) -> tuple[int, str]:
        """A new partial file in ``path``'s folder, made if missing (a delete may prune it meanwhile)."""
        for _ in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)
            except FileNotFoundError:  # the folder was emptied and pruned between the two calls
                continue
        return tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)

    def open_stream(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"no stored object {key!r}", field="key") from None
        return _chunks(handle)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key`` and the folders it leaves empty: S3 leaves none, so neither does this store."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or self.root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone already
                break

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no stored object {key!r}", field="key")
        return path.stat().st_size

    def modified(self, key: str) -> datetime:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no stored object {key!r}", field="key")
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """Local files have no URL of their own: the API streams them."""
        validate_key(key)
        return None

    def start_upload(
        self, key: str, parts: int, expires_s: int, metadata: Mapping[str, str]
    ) -> tuple[str, Sequence[str]]:
        """A local folder has no URL a client could send parts to."""
        validate_key(key)
        raise WrongState(
            "uploads straight to storage need the S3 artifact store (QAT_ARTIFACTS=s3://bucket/prefix); with local "
            "artifacts send the file to POST /v1/datasets",
            field="size",
        )

    def finish_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> tuple[int, dict[str, str]]:
        raise NotFound(f"no upload {upload_id!r} to {key!r}: local artifacts take none", field="upload_id")

    def abort_upload(self, key: str, upload_id: str) -> None:
        raise NotFound(f"no upload {upload_id!r} to {key!r}: local artifacts take none", field="upload_id")

    def list(self, prefix: str = "") -> Iterator[str]:
        # walk only the folder the prefix names up to its last '/', not the whole store
        start = self.root / validate_prefix(prefix).rpartition("/")[0]
        if not start.is_dir():
            return iter(())
        keys = (path.relative_to(self.root).as_posix() for path in start.rglob("*") if path.is_file())
        return iter(sorted(key for key in keys if key.startswith(prefix)))


@contextmanager
def _disk_full_as_error(key: str) -> Iterator[None]:
    """A full disk (or quota) is an operator's problem with a code of its own, not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        message = f"the artifact store is out of space; {key!r} was not stored; an operator must free space"
        raise StorageFull(message, field="key") from exc


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk
