"""A small typed Python client for the qat-service HTTP API; the ``qat`` client commands use it.

Torch-free and server-free: it needs only httpx, so a laptop can submit jobs and fetch
INT8 models without the training stack. Every API error becomes :class:`ApiError`
carrying the API's stable ``code``; a server that cannot be reached becomes
:class:`ServerUnreachable` naming the URL, so a typo in ``QAT_URL`` reads as one. Every
call is safe to repeat (a submission carries an Idempotency-Key), so a connection error
or a 502/503/504 is retried, as ``Retry-After`` asks, for up to ``retry_for_s``: a
database restart during an hours-long ``wait`` is ridden out.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from service.contract import (
    Artifact,
    CompletedPart,
    Dataset,
    DatasetUpload,
    DatasetUploadCompletion,
    DatasetUploadRequest,
    Job,
)

# answers that mean "again in a moment": the service or a proxy in front of it is restarting
TRANSIENT_STATUSES = frozenset({502, 503, 504})
RETRY_FOR_S = 60.0
_FIRST_DELAY_S, _MAX_DELAY_S = 0.5, 8.0
_HASH_CHUNK = 8 << 20
# tries per part of an upload sent in parts (a connection error or a 5xx from the store)
_PART_TRIES = 3
PathLike = str | os.PathLike[str]
JobId = str | uuid.UUID


class ClientError(Exception):
    """Base of every error this client raises."""


class ApiError(ClientError):
    """The API answered with an error: ``code`` is stable (``NOT_FOUND``, ``BAD_CONFIG``, ...)."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 0) -> None:
        super().__init__(f"[{code}] {field + ': ' if field else ''}{message}")
        self.code = code
        self.message = message
        self.field = field
        self.status = status

    @property
    def is_client_error(self) -> bool:
        """True when the request was at fault (4xx), false when the server was (5xx)."""
        return 400 <= self.status < 500


class ServerUnreachable(ClientError):
    """No HTTP answer at all: wrong URL, server down, network or timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the qat service at {url}: {reason}")
        self.url = url


class ChecksumMismatch(ClientError):
    """A downloaded artifact's bytes do not hash to the sha256 the API listed; nothing is kept."""


class WaitTimeout(ClientError):
    """:meth:`Client.wait` gave up before the job finished; the job itself keeps running."""


class Client:
    """One team's view of the service; a context manager that closes its connection pool."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, retry_for_s: float = RETRY_FOR_S) -> None:
        self.url = url.rstrip("/")
        self.retry_for_s = retry_for_s
        self._answered = False  # until the service has answered once, no answer means a wrong URL
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "qat-client"},
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        model: PathLike | IO[bytes],
        data: PathLike | IO[bytes] | None = None,
        dataset_id: str | None = None,
        config: Mapping[str, Any] | PathLike | None = None,
        spec: Mapping[str, Any] | PathLike | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Upload a ``.pt2`` model with data (a ``.npz`` or an uploaded ``dataset_id``) and queue a job.

        ``config`` and ``spec`` are dicts or paths of JSON files. A retried submission with
        the same ``idempotency_key`` returns the job the first one created instead of a
        second job; without one a fresh key is sent, so this call's own retries are safe.
        """
        form = {name: _json_text(value) for name, value in (("config", config), ("spec", spec)) if value is not None}
        if dataset_id is not None:
            form["dataset_id"] = dataset_id
        headers = {"Idempotency-Key": idempotency_key or f"qat-client-{uuid.uuid4()}"}
        with ExitStack() as stack:
            files = {"model": _upload(stack, model, "model.pt2")}
            if data is not None:
                files["data"] = _upload(stack, data, "data.npz")
            uploads = [file for _, file in files.values()]
            body = self._send("POST", "/v1/jobs", uploads, data=form, files=files, headers=headers).json()
            return Job.model_validate(body)

    def get(self, job_id: JobId) -> Job:
        return Job.model_validate(self._json("GET", _job_path(job_id)))

    def list(self, state: str | None = None, page_size: int | None = None) -> Iterator[Job]:
        """The team's jobs, newest first, fetching further pages only as the caller iterates."""
        params: dict[str, str | int] = {}
        if state is not None:
            params["state"] = state
        if page_size is not None:
            params["page_size"] = page_size
        while True:
            page = self._json("GET", "/v1/jobs", params=params)
            yield from (Job.model_validate(raw) for raw in page["jobs"])
            if not page.get("next_page_token"):
                return
            params["page_token"] = page["next_page_token"]

    def cancel(self, job_id: JobId) -> Job:
        """Queued jobs end at once (CANCELLED); running ones become CANCELLING until the worker stops."""
        return Job.model_validate(self._json("POST", _job_path(job_id, "cancel")))

    def delete_files(self, job_id: JobId) -> Job:
        """Delete a finished job's inputs and results now, freeing the team's storage; the job stays."""
        return Job.model_validate(self._json("DELETE", _job_path(job_id)))

    def upload_dataset(self, data: PathLike | IO[bytes]) -> Dataset:
        """Upload an ``.npz`` once and name it by its ``id`` in :meth:`submit` (``dataset_id``) many times."""
        with ExitStack() as stack:
            file = _upload(stack, data, "data.npz")
            return Dataset.model_validate(self._send("POST", "/v1/datasets", [file[1]], files={"data": file}).json())

    def upload_dataset_in_parts(self, path: PathLike, *, part_size: int | None = None) -> Dataset:
        """Send a dataset file straight to the object store, part by part: for files beyond the API's upload
        limit (the service must keep its artifacts in S3). The file is read twice, once for its sha256 and
        once to send it; an upload that fails part-way is aborted, leaving nothing stored."""
        source = Path(path)
        digest = hashlib.sha256()
        with open(source, "rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
        wanted = DatasetUploadRequest(size=source.stat().st_size, sha256=digest.hexdigest(), part_size=part_size)
        upload = DatasetUpload.model_validate(
            self._json("POST", "/v1/datasets/uploads", json=wanted.model_dump(exclude_none=True))
        )
        try:
            etags = _put_parts(source, upload, self._http.timeout)
        except BaseException:
            self._send("DELETE", f"/v1/datasets/uploads/{upload.id}", params={"upload_token": upload.upload_token})
            raise
        parts = [CompletedPart(part_number=number, etag=etag) for number, etag in enumerate(etags, start=1)]
        completion = DatasetUploadCompletion(upload_token=upload.upload_token, parts=parts)
        answer = self._json("POST", f"/v1/datasets/uploads/{upload.id}/complete", json=completion.model_dump())
        return Dataset.model_validate(answer)

    def delete_dataset(self, dataset_id: str | uuid.UUID) -> None:
        """Delete a dataset's file (the service refuses while a queued or running job uses it)."""
        self._send("DELETE", f"/v1/datasets/{quote(str(dataset_id), safe='')}")

    def artifacts(self, job_id: JobId) -> builtins.list[Artifact]:
        listed = self._json("GET", _job_path(job_id, "artifacts"))["artifacts"]
        return [Artifact.model_validate(item) for item in listed]

    def read_artifact(self, job_id: JobId, name: str) -> bytes:
        """One artifact's bytes in memory: for small files such as ``log.txt`` or ``report.json``."""
        response = self._send("GET", _artifact_path(job_id, name))
        return response.content

    def report_url(self, job_id: JobId) -> str:
        """Where the job's HTML report is served (with the team's bearer token, like every job URL)."""
        return self.url + _job_path(job_id, "report")

    def report(self, job_id: JobId) -> bytes:
        """The job's self-contained report.html, its sha256 checked against the one the API sent.

        Raises :class:`ApiError` ``NO_REPORT`` while the job has not succeeded.
        """
        response = self._send("GET", _job_path(job_id, "report"))
        expected = response.headers.get("X-Content-SHA256")
        actual = hashlib.sha256(response.content).hexdigest()
        if expected is not None and actual != expected:
            raise ChecksumMismatch(f"report.html: received bytes hash to {actual}, the service sent {expected}")
        return response.content

    def download(self, job_id: JobId, directory: PathLike) -> builtins.list[Path]:
        """Stream every artifact of the job into ``directory``, checking each sha256 on the way.

        A file is written as ``NAME.part`` and renamed only once its hash matches, so a
        partial or corrupted download never looks like a finished one.
        """
        root = Path(directory).resolve()
        paths = []
        for artifact in self.artifacts(job_id):
            target = (root / artifact.name).resolve()
            if not target.is_relative_to(root):
                raise ClientError(f"artifact name {artifact.name!r} points outside {root}; not written")
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download_one(job_id, artifact, target)
            paths.append(target)
        return paths

    def wait(
        self,
        job_id: JobId,
        on_progress: Callable[[Job], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll until the job is SUCCEEDED, FAILED or CANCELLED and return it.

        ``on_progress`` sees the job each time it changed (state, phase, progress, ...),
        the finished one included. Raises :class:`WaitTimeout` after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last: Job | None = None
        while True:
            job = self.get(job_id)
            if on_progress is not None and job != last:
                on_progress(job)
            last = job
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.state} after {timeout_s} s")
            time.sleep(poll_s)

    def _download_one(self, job_id: JobId, artifact: Artifact, target: Path) -> None:
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        try:
            with self._stream(_artifact_path(job_id, artifact.name)) as response, open(partial, "wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != artifact.sha256:
                raise ChecksumMismatch(
                    f"{artifact.name}: downloaded bytes hash to {digest.hexdigest()}, "
                    f"the service listed {artifact.sha256}; the file was not kept"
                )
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)

    @contextmanager
    def _stream(self, path: str) -> Iterator[httpx.Response]:
        """A streamed GET: API errors raised before the body is read, transport errors as ours."""
        response = self._send("GET", path, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, _reason(exc)) from exc
        finally:
            response.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._send(method, path, **kwargs).json()
        return body

    def _send(
        self,
        method: str,
        path: str,
        uploads: builtins.list[IO[bytes]] | None = None,
        *,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call, retried on a connection error or a 502/503/504 until ``retry_for_s`` has passed.

        It waits what ``Retry-After`` asks, else 0.5 s doubling to 8 s. ``uploads`` are
        rewound for each try; one that cannot be (a pipe) makes the call a single try.
        Connection errors are retried only once the service has answered this client: before
        that, they mean a wrong URL, said at once.
        """
        give_up = time.monotonic() + (self.retry_for_s if all(f.seekable() for f in uploads or []) else 0)
        delay = _FIRST_DELAY_S
        while True:
            for upload in uploads or []:
                upload.seek(0)
            try:
                request = self._http.build_request(method, path, **kwargs)
                # downloads may be answered with a redirect to a presigned store URL
                response = self._http.send(request, stream=stream, follow_redirects=method == "GET")
            except httpx.TransportError as exc:
                failure: ClientError = ServerUnreachable(self.url, _reason(exc))
                if not self._answered:
                    raise failure from exc
                wait = delay
            else:
                self._answered = True
                if not response.is_error:
                    return response
                response.read()
                response.close()
                if response.status_code not in TRANSIENT_STATUSES:
                    raise _api_error(response)
                failure, wait = _api_error(response), _retry_after(response, delay)
            if time.monotonic() + wait > give_up:
                raise failure
            time.sleep(wait)
            delay = min(delay * 2, _MAX_DELAY_S)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(str(error["code"]), str(error["message"]), error.get("field"), response.status_code)
    except (ValueError, KeyError, TypeError):
        # not the API's error shape: a proxy, a load balancer, or not this service at all
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(f"HTTP_{response.status_code}", text, None, response.status_code)


def _retry_after(response: httpx.Response, default: float) -> float:
    """The seconds a ``Retry-After`` header asks for (capped), else ``default``."""
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), _MAX_DELAY_S * 4)
    except ValueError:
        return default


def _reason(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _job_path(job_id: JobId, *rest: str) -> str:
    """``/v1/jobs/ID/...`` with the id escaped, so no input can address another route."""
    return "/".join(("/v1/jobs", quote(str(job_id), safe=""), *rest))


def _artifact_path(job_id: JobId, name: str) -> str:
    return _job_path(job_id, "artifacts", quote(name, safe="/"))


def _json_text(value: Mapping[str, Any] | PathLike) -> str:
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return Path(value).read_text()


def _put_parts(source: Path, upload: DatasetUpload, timeout: httpx.Timeout) -> builtins.list[str]:
    """PUT each part to its presigned URL, without this client's token (the URL is the credential); the
    ETags in part order. A part that fails is tried again, then the upload fails."""
    etags = []
    with open(source, "rb") as file, httpx.Client(timeout=timeout) as store:
        for part in upload.parts:
            body = file.read(upload.part_size)
            for attempt in range(_PART_TRIES):
                try:
                    answer = store.put(part.url, content=body)
                except httpx.TransportError as exc:
                    if attempt == _PART_TRIES - 1:
                        raise ServerUnreachable(part.url.split("?", 1)[0], _reason(exc)) from exc
                    continue
                if answer.status_code == 200 and "ETag" in answer.headers:
                    break
                if attempt == _PART_TRIES - 1 or answer.status_code < 500:
                    raise ApiError(
                        "UPLOAD_FAILED",
                        f"the object store answered {answer.status_code} to part {part.part_number}: "
                        f"{answer.text[:200]}",
                        "parts",
                        answer.status_code,
                    )
            etags.append(answer.headers["ETag"])
    return etags


def _upload(stack: ExitStack, source: PathLike | IO[bytes], default_name: str) -> tuple[str, IO[bytes]]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.name, stack.enter_context(open(path, "rb"))
    return Path(getattr(source, "name", default_name)).name, source
