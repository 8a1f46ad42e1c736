"""The artifact store interface and what both implementations share: key rules and hashing.

Uploads can be gigabytes, so bytes are only ever streamed in chunks and the sha256 is
computed on the way through; nothing holds a whole file in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Protocol, runtime_checkable

from service.errors import InvalidArgument

CHUNK_SIZE = 1 << 20
MAX_KEY_LENGTH = 900  # S3 allows 1024 bytes; leave room for the store's prefix
_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@-]+$")


@runtime_checkable
class ArtifactStore(Protocol):
    """Where uploaded inputs and job results live, addressed by relative '/'-separated keys."""

    def put_stream(self, key: str, fileobj: IO[bytes]) -> tuple[int, str]:
        """Store everything ``fileobj.read`` yields under ``key``; return ``(size, sha256 hex)``."""
        ...

    def open_stream(self, key: str) -> Iterator[bytes]:
        """The stored bytes in chunks; raises ``NotFound`` before the first chunk if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes; raises ``NotFound`` if absent."""
        ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL that downloads ``key`` without credentials, or ``None`` where the store has none."""
        ...

    def modified(self, key: str) -> datetime:
        """When ``key`` was last written (UTC); raises ``NotFound`` if absent. Retention ages objects by it."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys that start with ``prefix``, in lexicographic order."""
        ...

    def start_upload(
        self, key: str, parts: int, expires_s: int, metadata: Mapping[str, str]
    ) -> tuple[str, Sequence[str]]:
        """Begin a multipart upload to ``key`` that clients send straight to the store, ``metadata`` kept with
        the object: ``(upload id, one presigned PUT URL per part)``; ``WrongState`` where the store has none."""
        ...

    def finish_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> tuple[int, dict[str, str]]:
        """Join the parts (``etags[i]`` is part ``i + 1``'s); ``(size, metadata)`` of the stored object."""
        ...

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``InvalidArgument``.

    Keys become file paths in the local store, so ``..``, absolute paths, empty
    segments and unusual characters are refused before any I/O.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"storage key must be 1-{MAX_KEY_LENGTH} characters", field="key")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise InvalidArgument(
                f"bad storage key {key!r}: segments must be non-empty, not '.' or '..', "
                "and use only letters, digits and ._=+@-",
                field="key",
            )
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a valid key optionally ending in '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


class HashingReader:
    """Wraps a binary file: counts and hashes what is read through it.

    It deliberately has no ``seek``, so boto3 reads it once, in order, instead of
    re-reading parts from several threads (which would corrupt the running hash).
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._fileobj = fileobj
        self._sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self._sha256.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()
