"""The service's one settings object, read from ``QAT_*`` environment variables by pydantic-settings.

The API, the workers and the ``qat`` admin commands all call :meth:`Settings.from_env`,
so one set of variables configures every process. With nothing set, everything lives
under ``./var`` (SQLite, a filesystem broker, a local artifact directory): the embedded
default that needs no server. A bad value fails at startup with a :class:`BadSetting`
naming the variable, never later inside a request.

Each field's ``description`` is the only documentation of its variable: the README's
table is generated from them (``python -m service.settings``) and a test keeps it equal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ByteSize,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.errors import BadSetting

# AWS's rules for new buckets; S3-compatible servers accept a superset.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DATABASES = ("sqlite", "postgresql", "postgres")  # SQLAlchemy's backend names; service.db maps postgres
# The embedded defaults, files under ``var`` in the working directory.
_UNDER_VAR = {
    "database_url": "sqlite:///{var}/qat.db",
    "broker_url": "filesystem://{var}/broker",
    "artifacts": "{var}/artifacts",
}
# pydantic's words for a bad size say what is wrong, not what to write instead
_SIZE_EXAMPLE = "use bytes or a unit, e.g. 524288000, 500MiB or 2GiB"


@dataclass(frozen=True)
class LocalArtifacts:
    """Artifacts in a directory on this machine (``QAT_ARTIFACTS=/srv/qat/artifacts``)."""

    root: Path


@dataclass(frozen=True)
class S3Artifacts:
    """Artifacts in an S3 bucket under a key prefix (``QAT_ARTIFACTS=s3://bucket/prefix``)."""

    bucket: str
    prefix: str


def _database_url(raw: str) -> str:
    try:
        backend = make_url(raw).get_backend_name()
    except ArgumentError:
        raise ValueError(
            f"not a database URL: {raw!r}; use sqlite:////abs/path/qat.db or postgresql://user@host/db"
        ) from None
    if backend not in _DATABASES:
        raise ValueError(f"database {backend!r} is not supported; use sqlite or postgresql")
    return raw


def _broker_url(raw: str) -> str:
    scheme, sep, rest = raw.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a broker URL: {raw!r}; use redis://host:6379/0 or filesystem:///abs/folder")
    if scheme == "filesystem" and not rest.startswith("/"):
        raise ValueError(
            f"a filesystem broker needs an absolute folder, e.g. filesystem:///srv/qat/broker; got {raw!r}"
        )
    return raw


def _artifacts(raw: str) -> LocalArtifacts | S3Artifacts:
    """The store ``QAT_ARTIFACTS`` names; a relative directory is made absolute by :meth:`Settings.from_env`."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return LocalArtifacts(Path(raw).expanduser())
    if scheme != "s3":
        raise ValueError(f"unsupported artifact store {raw!r}; use a directory or s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a valid bucket name: 3-63 characters of a-z, 0-9, '.' and '-'")
    return S3Artifacts(bucket=bucket, prefix=prefix.strip("/"))


Size = Annotated[ByteSize, Field(gt=0)]
Endpoint = Annotated[str, Field(pattern=r"^https?://")]


class Settings(BaseSettings):
    """Everything the service reads from its environment, parsed and checked once; build it with :meth:`from_env`."""

    model_config = SettingsConfigDict(env_prefix="QAT_", frozen=True)

    database_url: Annotated[str, AfterValidator(_database_url)] = Field(
        description="job store: SQLite or PostgreSQL (`postgresql://user@host/db`; `postgres://` works too)"
    )
    broker_url: Annotated[str, AfterValidator(_broker_url)] = Field(
        description="Celery broker that carries job ids, e.g. `redis://host:6379/0`; "
        "the default is kombu's server-less filesystem transport (an absolute folder)"
    )
    artifacts: Annotated[LocalArtifacts | S3Artifacts, NoDecode, BeforeValidator(_artifacts)] = Field(
        description="where inputs and results are kept: a directory (relative ones start at the working directory) "
        "or `s3://bucket/prefix`"
    )
    s3_endpoint_url: Endpoint | None = Field(
        None, description="an S3-compatible server (MinIO, Ceph); unset means AWS S3. Credentials come from `AWS_*`"
    )
    s3_public_endpoint_url: Endpoint | None = Field(
        None,
        description="that server's address as clients reach it, when the API reaches it by an internal name "
        "(compose, cluster): presigned URLs are signed for it; unset means the same endpoint",
    )
    max_model_bytes: Size = Field(ByteSize(512 << 20), description="upload limit of a model")
    max_data_bytes: Size = Field(ByteSize(2 << 30), description="upload limit of a job's or a dataset's data")
    max_dataset_upload_bytes: Size = Field(
        ByteSize(256 << 30),
        description="largest dataset sent straight to S3 in parts (POST /v1/datasets/uploads); the API never "
        "carries those bytes",
    )
    upload_url_expiry_s: PositiveInt = Field(
        4 * 3600, description="seconds the presigned part URLs of a dataset upload stay valid"
    )
    max_config_bytes: Size = Field(ByteSize(1 << 20), description="upload limit of a job's spec and its config")
    lease_seconds: PositiveInt = Field(
        60, description="how long a worker's claim on a job lasts without a heartbeat before the job is re-queued"
    )
    max_attempts: PositiveInt = Field(
        3, description="how many times a job may be started before a lost worker fails it for good (`WORKER_LOST`)"
    )
    download_redirect: bool = Field(
        True,
        description="with S3, answer artifact downloads with a 302 to a presigned URL, so the bytes bypass the API "
        "process; `false` streams them through the API",
    )
    download_url_expiry_s: PositiveInt = Field(3600, description="seconds those presigned download URLs stay valid")
    child_memory_bytes: Size | None = Field(
        None,
        description="data memory (`RLIMIT_DATA`) a job's pipeline process may allocate, e.g. `8GiB`; over it the job "
        "fails `OUT_OF_MEMORY` instead of pushing the host into the OOM killer. Unset: no limit",
    )
    child_cpu_seconds: PositiveInt | None = Field(
        None,
        description="CPU time, all threads together (`RLIMIT_CPU`), a job's pipeline process may use; over it the "
        "job fails `TIMEOUT`. Unset: `spec.max_runtime_s` x the worker's CPUs, else no limit",
    )
    child_max_processes: PositiveInt = Field(
        512,
        description="processes and threads a job's pipeline may run at once (`RLIMIT_NPROC` in its sandbox): "
        "a fork bomb stops there instead of filling the host's process table",
    )
    child_threads: PositiveInt = Field(
        1,
        description="CPU threads of a job's pipeline process (torch, OpenMP, onnxruntime): the CPUs a worker slot "
        "owns. One by default: on a shared host, threads beyond a job's share make every job slower",
    )
    child_log_bytes: Size = Field(
        ByteSize(8 << 20), description="the most of a job's output its `log.txt` keeps: the first and the last half"
    )
    checkpoint_interval_s: NonNegativeInt = Field(
        300,
        description="a training job's newest checkpoint (saved after each epoch) is stored at most this often; "
        "a job whose worker or sandbox is killed resumes from it. `0`: every epoch",
    )
    child_start_ahead: bool = Field(
        True,
        description="start the next job's pipeline process (sandboxed, torch imported, no job yet) while the "
        "current job runs, so a worker starts a job in well under a second; costs one idle process (~420 MiB resident) "
        "per worker",
    )
    sandbox: Literal["bwrap", "none"] = Field(
        "bwrap",
        description="`bwrap`: each job's pipeline runs in a bubblewrap sandbox (no network, its own pids and "
        "filesystem view); `none`: unconfined, only for a trusted single-user host. "
        "A worker refuses to start (exit 2) when `bwrap` cannot run",
    )
    sandbox_uid: PositiveInt = Field(
        65534,
        description="the uid a job runs as when the worker is root (`nobody`); give each worker on a host its own "
        "(the process limit counts per uid)",
    )
    max_streams: PositiveInt = Field(
        1000,
        description="event streams one API process keeps open at once, each a greenlet and a database query a "
        "second; one more gets 503 `TOO_MANY_STREAMS` with `Retry-After`",
    )
    max_streams_per_team: PositiveInt = Field(250, description="the same bound for one team's streams")
    http_max_connections: PositiveInt = Field(
        2000, description="connections one API process serves at once; more wait in the listen backlog"
    )
    http_idle_timeout_s: PositiveInt = Field(
        60,
        description="a connection silent that long (idle keep-alive, stalled upload or download, a download read "
        "slower than 1 MiB per timeout) is closed",
    )
    http_head_timeout_s: PositiveInt = Field(
        10, description="seconds a request's line and headers have to arrive once its first byte has (else 408)"
    )

    @property
    def broker_folder(self) -> Path | None:
        """The folder of a ``filesystem://`` broker, ``None`` for any other."""
        scheme, _, rest = self.broker_url.partition("://")
        return Path(rest) if scheme == "filesystem" else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``); an empty value counts as unset.

        Relative paths, and the ``./var`` defaults, are resolved against ``cwd``
        (default: the current directory) so every later use sees absolute paths.
        """
        base = (cwd or Path.cwd()).resolve()
        under_var = {name: form.format(var=base / "var") for name, form in _UNDER_VAR.items()}
        # highest priority first: the variables, then the ./var defaults, then the fields' own
        sources = (_Environ(cls, os.environ if environ is None else environ), InitSettingsSource(cls, under_var))
        try:
            # mypy reads the fields' __init__ (pydantic's dataclass_transform), not BaseSettings' own
            settings = cls(_build_sources=(sources, {}))  # type: ignore[call-arg]
        except ValidationError as exc:
            error = exc.errors()[0]
            raise _bad_setting(error, _variable(str(error["loc"][0]))) from None
        if isinstance(settings.artifacts, LocalArtifacts):
            return settings.model_copy(update={"artifacts": LocalArtifacts(base / settings.artifacts.root)})
        return settings


def _variable(field: str) -> str:
    """The environment variable of a :class:`Settings` field (``lease_seconds`` -> ``QAT_LEASE_SECONDS``)."""
    return f"{Settings.model_config['env_prefix']}{field.upper()}"


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping, not always ``os.environ`` (tests pass theirs)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {name: value for name, value in environ.items() if value.strip()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _bad_setting(error: ErrorDetails, field: str) -> BadSetting:
    """pydantic's error as the service's: our validators' own words, else pydantic's, the value and an example."""
    if error["type"] == "value_error":
        return BadSetting(str(error["ctx"]["error"]), field=field)
    example = f"; {_SIZE_EXAMPLE}" if error["type"].startswith("byte_size") else ""
    return BadSetting(f"{error['msg']}, got {error['input']!r}{example}", field=field)


def parse_size(raw: str, field: str) -> int:
    """A positive size as the settings read one, for command options (``--max-storage 500GiB``)."""
    try:
        return TypeAdapter(Size).validate_python(raw)
    except ValidationError as exc:
        raise _bad_setting(exc.errors()[0], field) from None


def markdown_table() -> str:
    """The README's table of variables, from the fields' descriptions and defaults."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{_variable(name)}` | {_shown(name, field.default)} | {field.description} |")
    return "\n".join(rows) + "\n"


def _shown(name: str, default: Any) -> str:
    if name in _UNDER_VAR:
        return f"`{_UNDER_VAR[name].format(var='./var')}`"
    if default is None:
        return "unset"
    if isinstance(default, ByteSize):  # "512.0MiB" -> "512MiB": the defaults are whole units
        return f"`{default.human_readable().replace('.0', '')}`"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"


if __name__ == "__main__":
    print(markdown_table(), end="")
