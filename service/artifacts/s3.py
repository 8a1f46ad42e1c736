"""Artifacts in S3 or any S3-compatible server (MinIO, Ceph, moto) through boto3.

Two client settings make S3-compatible servers work: checksums only ``when_required``
(recent boto3 adds CRC32 trailers by default, which many servers reject or store as
part of the body) and path-style addressing (``http://host/bucket/key``, no per-bucket
DNS). ``s3v4`` signatures make presigned URLs valid everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.artifacts.base import CHUNK_SIZE, HashingReader, validate_key, validate_prefix
from service.errors import InvalidArgument, NotFound, StorageUnavailable

_MISSING = ("404", "NoSuchKey", "NotFound")
_MISSING_UPLOAD = (*_MISSING, "NoSuchUpload")
# completing an upload: the parts the client names are not the ones it sent (or one but the last is small)
_BAD_PARTS = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall")
# Multipart above 8 MiB in 8 MiB parts. The reader is not seekable, so boto3 reads it
# part by part in order and holds at most ten parts (80 MiB) in memory, whatever the size.
_TRANSFER = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)


class S3Store:
    """Keys live under ``prefix/`` in ``bucket``; credentials come from boto3's usual chain."""

    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, public_endpoint_url: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        session = boto3.session.Session()
        self.client: Any = _client(session, endpoint_url)
        # a presigned URL's signature covers its host: sign for the address clients use
        self._presigner: Any = _client(session, public_endpoint_url) if public_endpoint_url else self.client

    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put_stream(self, key: str, fileobj: IO[bytes]) -> tuple[int, str]:
        name = self._object(key)
        reader = HashingReader(fileobj)
        with _errors(key):
            self.client.upload_fileobj(reader, self.bucket, name, Config=_TRANSFER)
        return reader.size, reader.sha256

    def open_stream(self, key: str) -> Iterator[bytes]:
        name = self._object(key)
        with _errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        return _chunks(body)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        name = self._object(key)
        with _errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def size(self, key: str) -> int:
        name = self._object(key)
        with _errors(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"])

    def modified(self, key: str) -> datetime:
        name = self._object(key)
        with _errors(key):
            stamp: datetime = self.client.head_object(Bucket=self.bucket, Key=name)["LastModified"]
        return stamp.astimezone(UTC)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        name = self._object(key)
        with _errors(key):
            url: str = self._presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires_s
            )
        return url

    def start_upload(
        self, key: str, parts: int, expires_s: int, metadata: Mapping[str, str]
    ) -> tuple[str, Sequence[str]]:
        name = self._object(key)
        with _errors(key):
            upload_id: str = self.client.create_multipart_upload(Bucket=self.bucket, Key=name, Metadata=dict(metadata))[
                "UploadId"
            ]
            urls = [
                self._presigner.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": self.bucket, "Key": name, "UploadId": upload_id, "PartNumber": number},
                    ExpiresIn=expires_s,
                )
                for number in range(1, parts + 1)
            ]
        return upload_id, urls

    def finish_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> tuple[int, dict[str, str]]:
        name = self._object(key)
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, start=1)]
        self._check_upload(key, upload_id)
        with _errors(key, missing=_MISSING_UPLOAD, bad_parts=_BAD_PARTS):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            head = self.client.head_object(Bucket=self.bucket, Key=name)
        return int(head["ContentLength"]), dict(head.get("Metadata", {}))

    def abort_upload(self, key: str, upload_id: str) -> None:
        name = self._object(key)
        self._check_upload(key, upload_id)
        with _errors(key, missing=_MISSING_UPLOAD):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    def _check_upload(self, key: str, upload_id: str) -> None:
        """``NotFound`` unless ``upload_id`` is an unfinished upload to ``key`` itself. Servers differ on
        whether an upload id sent with another key acts on the upload (moto does): the key is the owner's."""
        name = self._object(key)
        with _errors(key):
            listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=name)
        if not any(u["Key"] == name and u["UploadId"] == upload_id for u in listed.get("Uploads", [])):
            raise NotFound(
                "no unfinished upload with that id and token (completed, aborted, or never made)", field="upload_id"
            )

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + validate_prefix(prefix)
        with _errors(prefix):
            pages = list(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full))
        return iter([item["Key"][len(self.prefix) :] for page in pages for item in page.get("Contents", [])])


@contextmanager
def _errors(key: str, missing: tuple[str, ...] = _MISSING, bad_parts: tuple[str, ...] = ()) -> Iterator[None]:
    """botocore's exceptions as the service's: a missing object (or upload) is ``NotFound``, parts that do not
    match what was sent an ``InvalidArgument`` on ``parts``, the rest unavailable."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in missing:
            raise NotFound(f"no stored object or upload {key!r}", field="key") from None
        if code in bad_parts:
            raise InvalidArgument(
                f"the store refused the parts ({code}: {error.get('Message', '')}); PUT every part to its URL and "
                "send each part's ETag, in part order",
                field="parts",
            ) from None
        raise StorageUnavailable(f"S3 refused the request for {key!r}: {exc}", field="key") from exc
    except S3UploadFailedError as exc:
        raise StorageUnavailable(f"S3 refused the upload of {key!r}: {exc}", field="key") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 could not be reached for {key!r}: {exc}", field="key") from exc


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_SIZE)
    finally:
        body.close()


def _client(session: boto3.session.Session, endpoint_url: str | None) -> Any:
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=session.region_name or "us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )
