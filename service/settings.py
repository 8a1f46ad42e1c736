"""The service's one settings object, read from ``QAT_*`` environment variables.

The API, the workers and the ``qat`` admin commands all call :meth:`Settings.from_env`,
so one set of variables configures every process. With nothing set, everything lives
under ``./var`` (SQLite, a filesystem broker, a local artifact directory): the embedded
default that needs no server. A bad value fails at startup with a :class:`BadSetting`
naming the variable, never later inside a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.errors import BadSetting

_SIZE = re.compile(r"^\s*(\d+)\s*(?:([KMGT])(?:i?B)?|B)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# AWS's rules for new buckets; S3-compatible servers accept a superset.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SUPPORTED_DATABASES = ("sqlite", "postgresql")
_DATABASE_ALIASES = {"postgres": "postgresql"}
# how a job's child is isolated; the first is the default
SANDBOXES = ("bwrap", "none")
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class LocalArtifacts:
    """Artifacts in a directory on this machine (``QAT_ARTIFACTS=/srv/qat/artifacts``)."""

    root: Path


@dataclass(frozen=True)
class S3Artifacts:
    """Artifacts in an S3 bucket under a key prefix (``QAT_ARTIFACTS=s3://bucket/prefix``)."""

    bucket: str
    prefix: str


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, parsed and checked once.

    Attributes:
        database_url: ``QAT_DATABASE_URL``, a SQLAlchemy URL for SQLite or PostgreSQL
            (``postgresql://user@host/db``); default ``sqlite:///<cwd>/var/qat.db``.
        broker_url: ``QAT_BROKER_URL``, the Celery broker that carries job ids
            (``redis://host:6379/0``); default ``filesystem://<cwd>/var/broker``, kombu's
            server-less filesystem transport.
        broker_folder: the folder of a ``filesystem://`` broker, ``None`` for any other.
        artifacts: ``QAT_ARTIFACTS``, a local directory (default ``<cwd>/var/artifacts``)
            or ``s3://bucket/prefix``.
        s3_endpoint_url: ``QAT_S3_ENDPOINT_URL``, an S3-compatible server (MinIO, Ceph,
            ...); unset means AWS S3. Credentials come from the usual ``AWS_*`` variables.
        max_model_bytes / max_data_bytes / max_config_bytes: ``QAT_MAX_MODEL_BYTES``,
            ``QAT_MAX_DATA_BYTES``, ``QAT_MAX_CONFIG_BYTES``, upload limits; plain bytes
            or with a unit (``512MiB``, ``2G``).
        lease_seconds: ``QAT_LEASE_SECONDS``, how long a worker's claim on a job lasts
            without a heartbeat before the reaper re-queues the job.
        max_attempts: ``QAT_MAX_ATTEMPTS``, how many times a job may be started before a
            lost worker fails it for good (``WORKER_LOST``).
        s3_public_endpoint_url: ``QAT_S3_PUBLIC_ENDPOINT_URL``, the address of that server as
            clients reach it, when it differs from the API's (a compose or cluster-internal
            name): presigned download URLs are signed for it. Default: the same endpoint.
        download_redirect: ``QAT_DOWNLOAD_REDIRECT`` (default ``true``), answer artifact
            downloads with a 302 to a presigned URL where the store has them (S3), so the
            bytes bypass the API process; ``false`` streams them through the API.
        download_url_expiry_s: ``QAT_DOWNLOAD_URL_EXPIRY_S``, how long those URLs stay valid.
        child_memory_bytes: ``QAT_CHILD_MEMORY_BYTES``, the most data memory a job's pipeline
            process may allocate (``RLIMIT_DATA``; ``8GiB``); unset means no limit. An
            allocation over it fails the job with ``OUT_OF_MEMORY`` instead of letting one
            job push the worker's host into the OOM killer.
        child_cpu_seconds: ``QAT_CHILD_CPU_SECONDS``, the most CPU time (all threads
            together, ``RLIMIT_CPU``) a job's pipeline process may use; unset means a job
            with ``spec.max_runtime_s`` gets that many seconds times the worker's CPUs and
            one without gets no limit. Over it the job fails with ``TIMEOUT``.
        child_max_processes: ``QAT_CHILD_MAX_PROCESSES``, the most processes and threads a
            job's pipeline may run at once (``RLIMIT_NPROC`` inside its sandbox; default 512):
            a fork bomb fails there instead of filling the host's process table.
        child_log_bytes: ``QAT_CHILD_LOG_BYTES``, the most of a job's output its ``log.txt``
            keeps (default ``8MiB``): the first and the last half; the worker holds no more.
        max_streams / max_streams_per_team: ``QAT_MAX_STREAMS`` (default 1000) and
            ``QAT_MAX_STREAMS_PER_TEAM`` (default 250), the event streams one API process keeps
            open at once; each is a greenlet and a database query a second. One more is
            answered 503 with ``Retry-After``.
        http_max_connections: ``QAT_HTTP_MAX_CONNECTIONS`` (default 2000), connections one API
            process serves at once; more wait in the listen backlog.
        http_idle_timeout_s: ``QAT_HTTP_IDLE_TIMEOUT_S`` (default 60), a connection that
            neither sends nor takes a byte for this long is closed (keep-alive, stalled
            uploads, a client that stopped reading a download).
        http_head_timeout_s: ``QAT_HTTP_HEAD_TIMEOUT_S`` (default 10), the time a request's line
            and headers have to arrive once its first byte has: a slow-header client gets a 408.
        sandbox: ``QAT_SANDBOX``, how a job's pipeline is isolated: ``bwrap`` (default:
            bubblewrap namespaces, no network, its own pid space and filesystem view) or
            ``none``, only for a trusted single-user host; a worker refuses to start when
            ``bwrap`` is asked for and cannot run.
        sandbox_uid: ``QAT_SANDBOX_UID``, the unprivileged user a job runs as when the worker
            is root (default 65534, ``nobody``); give each worker on a host its own, since
            the process limit counts per user.
    """

    database_url: str
    broker_url: str
    broker_folder: Path | None
    artifacts: LocalArtifacts | S3Artifacts
    s3_endpoint_url: str | None
    s3_public_endpoint_url: str | None
    max_model_bytes: int
    max_data_bytes: int
    max_config_bytes: int
    lease_seconds: int
    max_attempts: int
    download_redirect: bool = True
    download_url_expiry_s: int = 3600
    child_memory_bytes: int | None = None
    child_cpu_seconds: int | None = None
    child_max_processes: int = 512
    child_log_bytes: int = 8 << 20
    sandbox: str = "bwrap"
    sandbox_uid: int = 65534
    max_streams: int = 1000
    max_streams_per_team: int = 250
    http_max_connections: int = 2000
    http_idle_timeout_s: int = 60
    http_head_timeout_s: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``); an empty value counts as unset.

        Relative paths, and the ``./var`` defaults, are resolved against ``cwd``
        (default: the current directory) so every later use sees absolute paths.
        """
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v.strip()}
        var = (cwd or Path.cwd()).resolve() / "var"
        broker_url = env.get("QAT_BROKER_URL", f"filesystem://{var / 'broker'}")
        return cls(
            database_url=_database_url(env.get("QAT_DATABASE_URL", f"sqlite:///{var / 'qat.db'}")),
            broker_url=broker_url,
            broker_folder=_broker_folder(broker_url),
            artifacts=_artifacts(env.get("QAT_ARTIFACTS", str(var / "artifacts")), cwd),
            s3_endpoint_url=_endpoint(env, "QAT_S3_ENDPOINT_URL"),
            s3_public_endpoint_url=_endpoint(env, "QAT_S3_PUBLIC_ENDPOINT_URL"),
            max_model_bytes=_size(env, "QAT_MAX_MODEL_BYTES", 512 << 20),
            max_data_bytes=_size(env, "QAT_MAX_DATA_BYTES", 2 << 30),
            max_config_bytes=_size(env, "QAT_MAX_CONFIG_BYTES", 1 << 20),
            lease_seconds=_positive_int(env, "QAT_LEASE_SECONDS", 60),
            max_attempts=_positive_int(env, "QAT_MAX_ATTEMPTS", 3),
            download_redirect=_flag(env, "QAT_DOWNLOAD_REDIRECT", default=True),
            download_url_expiry_s=_positive_int(env, "QAT_DOWNLOAD_URL_EXPIRY_S", 3600),
            child_memory_bytes=_optional_size(env, "QAT_CHILD_MEMORY_BYTES"),
            child_cpu_seconds=_positive_int(env, "QAT_CHILD_CPU_SECONDS", 0) or None,
            child_max_processes=_positive_int(env, "QAT_CHILD_MAX_PROCESSES", 512),
            child_log_bytes=_size(env, "QAT_CHILD_LOG_BYTES", 8 << 20),
            sandbox=_choice(env, "QAT_SANDBOX", SANDBOXES),
            sandbox_uid=_positive_int(env, "QAT_SANDBOX_UID", 65534),
            max_streams=_positive_int(env, "QAT_MAX_STREAMS", 1000),
            max_streams_per_team=_positive_int(env, "QAT_MAX_STREAMS_PER_TEAM", 250),
            http_max_connections=_positive_int(env, "QAT_HTTP_MAX_CONNECTIONS", 2000),
            http_idle_timeout_s=_positive_int(env, "QAT_HTTP_IDLE_TIMEOUT_S", 60),
            http_head_timeout_s=_positive_int(env, "QAT_HTTP_HEAD_TIMEOUT_S", 10),
        )


def _database_url(raw: str) -> str:
    try:
        backend = make_url(raw).get_backend_name()
        backend = _DATABASE_ALIASES.get(backend, backend)
    except ArgumentError:
        raise BadSetting(
            f"not a database URL: {raw!r}; use sqlite:////abs/path/qat.db or postgresql://user@host/db",
            field="QAT_DATABASE_URL",
        ) from None
    if backend not in _SUPPORTED_DATABASES:
        raise BadSetting(
            f"database {backend!r} is not supported; use one of {', '.join(_SUPPORTED_DATABASES)}",
            field="QAT_DATABASE_URL",
        )
    return raw


def _broker_folder(url: str) -> Path | None:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise BadSetting(
            f"not a broker URL: {url!r}; use redis://host:6379/0 or filesystem:///abs/folder", field="QAT_BROKER_URL"
        )
    if scheme != "filesystem":
        return None
    if not rest.startswith("/"):
        raise BadSetting(
            f"a filesystem broker needs an absolute folder, e.g. filesystem:///srv/qat/broker; got {url!r}",
            field="QAT_BROKER_URL",
        )
    return Path(rest)


def _artifacts(raw: str, cwd: Path | None) -> LocalArtifacts | S3Artifacts:
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return LocalArtifacts((cwd or Path.cwd()).resolve() / Path(raw).expanduser())
    if scheme != "s3":
        raise BadSetting(
            f"unsupported artifact store {raw!r}; use a directory or s3://bucket/prefix", field="QAT_ARTIFACTS"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise BadSetting(
            f"{bucket!r} is not a valid bucket name: 3-63 characters of a-z, 0-9, '.' and '-'",
            field="QAT_ARTIFACTS",
        )
    return S3Artifacts(bucket=bucket, prefix=prefix.strip("/"))


def _endpoint(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is not None and not raw.startswith(("http://", "https://")):
        raise BadSetting(f"expected an http:// or https:// URL, got {raw!r}", field=name)
    return raw


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    return default if raw is None else parse_size(raw, name)


def parse_size(raw: str, field: str) -> int:
    """A positive size, plain bytes or with a unit (``524288000``, ``500MiB``, ``2G``, ``1TiB``)."""
    match = _SIZE.match(raw)
    if not match or int(match[1]) == 0:
        raise BadSetting(f"expected a positive size such as 524288000 or 500MiB, got {raw!r}", field=field)
    unit = match[2].upper() if match[2] else None
    return int(match[1]) * _UNITS[unit]


def _optional_size(env: Mapping[str, str], name: str) -> int | None:
    """A size setting with no default: ``None`` when unset."""
    return _size(env, name, 0) if name in env else None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise BadSetting(f"expected a positive whole number, got {raw!r}", field=name)
    return value


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, str(default)).strip().lower()
    if raw not in _FLAGS:
        raise BadSetting(f"expected true or false (1/0, yes/no), got {raw!r}", field=name)
    return _FLAGS[raw]


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset)."""
    raw = env.get(name, choices[0]).strip().lower()
    if raw not in choices:
        raise BadSetting(f"expected one of {', '.join(choices)}, got {raw!r}", field=name)
    return raw
