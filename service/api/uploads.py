"""Reading request bodies (multipart uploads, JSON) without trusting their size.

A declared ``Content-Length`` over the limit is refused before the body is read; a body
without one (chunked) is cut off by werkzeug at the same limit while streaming. Files
are spooled by werkzeug's form parser (small ones in memory, the rest in temporary
files), then each part is measured against its own limit before anything is parsed.
"""

from __future__ import annotations

import os
from typing import IO, TypeVar

from flask import request
from pydantic import BaseModel

from service.api.schemas import parse_body
from service.errors import InvalidArgument, PayloadTooLarge
from service.settings import Settings

# room for multipart boundaries, part headers and small text fields such as `spec`
FORM_OVERHEAD_BYTES = 1 << 20
# a JSON body: an upload's 10 000 parts with their ETags at the most
JSON_BODY_BYTES = 4 << 20
M = TypeVar("M", bound=BaseModel)


def job_body_limit(settings: Settings) -> int:
    """The largest ``POST /v1/jobs`` body: a model, a data file and a config, each at its limit."""
    return settings.max_model_bytes + settings.max_data_bytes + settings.max_config_bytes + FORM_OVERHEAD_BYTES


def dataset_body_limit(settings: Settings) -> int:
    return settings.max_data_bytes + FORM_OVERHEAD_BYTES


def json_body(model: type[M]) -> M:
    """The request's JSON body as ``model``, read only up to :data:`JSON_BODY_BYTES`."""
    _cap_body(JSON_BODY_BYTES)
    if not request.is_json:
        raise InvalidArgument("send the body as application/json", field="Content-Type")
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidArgument("the body is not valid JSON", field="body")
    return parse_body(model, data)


def limit_body(limit: int) -> None:
    """Refuse a body declared larger than ``limit`` now, and cap reading at ``limit`` otherwise."""
    _cap_body(limit)
    if not request.mimetype.startswith("multipart/form-data"):
        raise InvalidArgument("send the upload as multipart/form-data", field="Content-Type")


def _cap_body(limit: int) -> None:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"the request body is {declared} bytes; this endpoint accepts at most {limit}", field="body"
        )
    request.max_content_length = limit


def required_file_part(name: str, limit: int) -> IO[bytes]:
    """Like :func:`file_part`, for a part the request cannot do without."""
    stream = file_part(name, limit)
    if stream is None:
        raise InvalidArgument(f"the multipart part {name!r} (a file) is required", field=name)
    return stream


def file_part(name: str, limit: int) -> IO[bytes] | None:
    """The uploaded file ``name``, rewound, after checking it is at most ``limit`` bytes."""
    upload = request.files.get(name)
    if upload is None:
        return None
    stream: IO[bytes] = upload.stream
    size = stream.seek(0, os.SEEK_END)
    if size > limit:
        raise PayloadTooLarge(f"{name} is {size} bytes; the limit is {limit}", field=name)
    if size == 0:
        raise InvalidArgument(f"{name} is empty (0 bytes); attach the file itself", field=name)
    stream.seek(0)
    return stream


def text_part(name: str, limit: int) -> str | None:
    """A small part given either as a form field or as a file (``-F spec=@spec.json``), as text."""
    if name in request.form:
        text = request.form[name]
        if len(text.encode("utf-8")) > limit:
            raise PayloadTooLarge(f"{name} is over its limit of {limit} bytes", field=name)
        return text
    stream = file_part(name, limit)
    if stream is None:
        return None
    try:
        return stream.read().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{name} must be UTF-8 JSON text", field=name) from None
