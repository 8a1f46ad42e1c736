"""The ``qat`` client commands: submit, status, list, wait, cancel, download, logs, report.

Thin over :mod:`service.client`, so the shell and Python see the same behaviour. Every
command takes ``--url``/``--token`` (see :mod:`service.client.config` for the fallbacks)
and ``--json``, which prints one JSON document on stdout and nothing else there.
People get tables and a live progress bar; errors go to stderr as one line,
``error [CODE] field: message``. Exit codes, for scripts:

    0  done (for submit --wait and wait: the job SUCCEEDED)
    1  the job FAILED or was CANCELLED
    2  usage or input error: bad flags or files, rejected config/spec, unknown job, bad token
    3  server or connection error: unreachable, 5xx, a download that failed its sha256
"""

from __future__ import annotations

import json
import sys
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from service.client.api import ApiError, Client, ClientError, JobId
from service.client.config import ClientConfigError, resolve_connection
from service.client.view import accuracy_table, job_summary, jobs_table, live_progress, print_files
from service.contract import Job, JobState

# 4: a team quota is full (429 QUOTA, 507 STORAGE_QUOTA): the same command will work later,
# once jobs end or files are deleted, unlike a usage error
EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_QUOTA = 0, 1, 2, 3, 4
STATES = tuple(JobState)
F = TypeVar("F", bound=Callable[..., Any])

_out = Console()
_err = Console(stderr=True)


class CommandFailed(click.ClickException):
    """One stderr line and a documented exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click types it as a class constant; ours vary

    def show(self, file: Any = None) -> None:
        click.echo(f"error {self.message}", err=True)


_url_option = click.option("--url", help="Service URL [env QAT_URL, config file; default http://127.0.0.1:8000].")
_token_option = click.option("--token", help="Team API token [env QAT_TOKEN, config file].")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")


def client_options(command: F) -> F:
    """``--url``, ``--token`` and ``--json``: the options every client command shares."""
    return _url_option(_token_option(_json_option(command)))


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for the resolved URL and token; client errors become exit codes 2, 3 or 4."""
    try:
        connection = resolve_connection(url, token)
    except ClientConfigError as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from exc
    try:
        with Client(connection.url, connection.token) as client:
            yield client
    except ApiError as exc:
        quota = exc.status == 429 or exc.code == "STORAGE_QUOTA"
        code = EXIT_QUOTA if quota else EXIT_USAGE if exc.is_client_error else EXIT_SERVER
        raise CommandFailed(str(exc), code) from exc
    except ClientError as exc:
        raise CommandFailed(str(exc), EXIT_SERVER) from exc


@click.command("submit")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="MODEL.pt2")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Dataset .npz.")
@click.option("--dataset-id", help="A dataset uploaded before (instead of --data).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="AMCT-style config.json.")
@click.option("--spec", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Job spec JSON.")
@click.option("--epochs", type=int, help="QAT epochs (instead of --spec).")
@click.option("--lr", type=float, help="Learning rate (instead of --spec).")
@click.option("--batch-size", type=int, help="Batch size (instead of --spec).")
@click.option("--device", help="auto (the worker's GPU if it has one), cpu, cuda or cuda:N (instead of --spec).")
@click.option("--idempotency-key", help="Retrying with the same key returns the same job.")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it finishes.")
@click.option("--download", type=click.Path(file_okay=False, path_type=Path), help="With --wait: fetch artifacts here.")
@client_options
def submit(
    model: Path,
    data: Path | None,
    dataset_id: str | None,
    config: Path | None,
    spec: Path | None,
    epochs: int | None,
    lr: float | None,
    batch_size: int | None,
    device: str | None,
    idempotency_key: str | None,
    wait_: bool,
    download: Path | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit MODEL.pt2 for quantization-aware training; prints the job id (or, with --wait, the result)."""
    given = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "device": device}
    inline = {k: v for k, v in given.items() if v is not None}
    if spec is not None and inline:
        raise click.UsageError("give --spec or --epochs/--lr/--batch-size/--device, not both")
    if download is not None and not wait_:
        raise click.UsageError("--download needs --wait (or run `qat download ID DIR` later)")
    with connect(url, token) as client:
        job = client.submit(
            model,
            data=data,
            dataset_id=dataset_id,
            config=config,
            spec=spec or inline or None,
            idempotency_key=idempotency_key,
        )
        if not as_json:
            _err.print(f"submitted job [bold]{job.id}[/bold]")
        if not wait_:
            _emit(job.model_dump(mode="json"), lambda: _out.print(job.id), as_json)
            return
        _follow_to_end(client, job.id, download, as_json)


def _follow_to_end(client: Client, job_id: JobId, download: Path | None, as_json: bool) -> None:
    """Live progress until the job ends, its artifacts fetched on success, then the exit code."""
    job = _follow(client, job_id, as_json)
    files = client.download(job.id, download) if download is not None and job.succeeded else []
    _finish(job, as_json, files, client.report_url(job.id))


@click.command("status")
@click.argument("job_id", metavar="ID")
@client_options
def status(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show a job: state, phase, progress, failure and, once done, the FP32 vs INT8 table."""
    with connect(url, token) as client:
        job = client.get(job_id)
    _emit(job.model_dump(mode="json"), lambda: _show_job(job, client.report_url(job.id)), as_json)


@click.command("list")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many jobs.")
@client_options
def list_jobs(state: str | None, limit: int, url: str | None, token: str | None, as_json: bool) -> None:
    """The team's jobs, newest first."""
    with connect(url, token) as client:
        jobs = []
        for job in client.list(state=state.upper() if state else None):
            jobs.append(job)
            if len(jobs) >= limit:
                break
    _emit({"jobs": [job.model_dump(mode="json") for job in jobs]}, lambda: _out.print(jobs_table(jobs)), as_json)


@click.command("wait")
@click.argument("job_id", metavar="ID")
@click.option("--download", type=click.Path(file_okay=False, path_type=Path), help="Fetch artifacts here on success.")
@client_options
def wait(job_id: str, download: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Follow a job with a live progress bar until it ends; exit 1 unless it SUCCEEDED."""
    with connect(url, token) as client:
        _follow_to_end(client, job_id, download, as_json)


@click.command("cancel")
@click.argument("job_id", metavar="ID")
@client_options
def cancel(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Cancel a job: queued ones end at once, running ones stop at the worker's next check."""
    _act_on_job(Client.cancel, "", job_id, url, token, as_json)


@click.command("delete")
@click.argument("job_id", metavar="ID")
@client_options
def delete(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Delete a finished job's inputs and results now, freeing the team's storage (the job stays listed)."""
    _act_on_job(Client.delete_files, ": files deleted", job_id, url, token, as_json)


@click.command("upload-dataset")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--in-parts",
    is_flag=True,
    help="Send it straight to the service's object store (S3), part by part: for files beyond the API's upload "
    "limit (2 GiB by default). Without: through the API.",
)
@click.option("--part-size", type=click.IntRange(min=5 << 20), help="With --in-parts: bytes per part [64 MiB].")
@client_options
def upload_dataset(
    data: Path, in_parts: bool, part_size: int | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """Upload a dataset (.npz, or .zip/.tar of images) once; name its id in `qat submit --dataset-id`."""
    with connect(url, token) as client:
        if in_parts:
            dataset = client.upload_dataset_in_parts(data, part_size=part_size)
        else:
            dataset = client.upload_dataset(data)
    _emit(dataset.model_dump(mode="json"), lambda: _out.print(f"{dataset.id} {dataset.size} bytes"), as_json)


def _act_on_job(
    act: Callable[[Client, str], Job], done: str, job_id: str, url: str | None, token: str | None, as_json: bool
) -> None:
    """One call that changes a job, then the job as it is now: its JSON, or its id and state."""
    with connect(url, token) as client:
        job = act(client, job_id)
    _emit(job.model_dump(mode="json"), lambda: _out.print(f"{job.id} {job.state}{done}"), as_json)


@click.command("download")
@click.argument("job_id", metavar="ID")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")
@client_options
def download(job_id: str, directory: Path, url: str | None, token: str | None, as_json: bool) -> None:
    """Download every artifact of a job into DIR, verifying each file's sha256."""
    with connect(url, token) as client:
        files = client.download(job_id, directory)
    _emit({"files": [str(path) for path in files]}, lambda: print_files(_out, files), as_json)


@click.command("logs")
@click.argument("job_id", metavar="ID")
@_url_option
@_token_option
def logs(job_id: str, url: str | None, token: str | None) -> None:
    """Print the job's log.txt (the quantization process's output) as it is, for less or grep."""
    with connect(url, token) as client:
        text = client.read_artifact(job_id, "log.txt")
    sys.stdout.buffer.write(text)
    sys.stdout.flush()


@click.command("report")
@click.argument("job_id", metavar="ID")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write it here [default: ./qat-report-ID.html]."
)
@click.option("--open", "open_", is_flag=True, help="Open it in the default web browser.")
@client_options
def report(job_id: str, output: Path | None, open_: bool, url: str | None, token: str | None, as_json: bool) -> None:
    """Download a succeeded job's report.html (accuracy, per-layer charts, tuning, config); prints its path."""
    with connect(url, token) as client:
        page = client.report(job_id)
        served_at = client.report_url(job_id)
    path = (output or Path(f"qat-report-{job_id}.html")).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(page)
    if open_ and not webbrowser.open(path.as_uri()):
        _err.print(f"no web browser could be started here; open {path} yourself", highlight=False)
    _emit({"path": str(path), "url": served_at}, lambda: _print_path(path), as_json)


def _print_path(path: Path) -> None:
    _out.print(str(path), highlight=False, soft_wrap=True)


def _follow(client: Client, job_id: JobId, as_json: bool) -> Job:
    """Wait for the job; people see a live bar, started only once the job is known to exist."""
    if as_json:
        return client.wait(job_id)
    job = client.get(job_id)  # an unknown id fails here, before a bar is drawn
    if job.done:
        return job
    with live_progress(_err) as on_progress:
        return client.wait(job_id, on_progress=on_progress)


def _finish(job: Job, as_json: bool, files: list[Path], report_url: str) -> NoReturn:
    """Print the finished job (and downloaded files) and exit 0 if it succeeded, 1 otherwise."""
    if as_json:
        click.echo(json.dumps({**job.model_dump(mode="json"), "downloaded": [str(path) for path in files]}))
    else:
        _show_job(job, report_url)
        if files:
            print_files(_out, files)
    sys.exit(EXIT_OK if job.succeeded else EXIT_JOB_FAILED)


def _show_job(job: Job, report_url: str) -> None:
    _out.print(job_summary(job))
    table = accuracy_table(job.metrics)
    if table is not None:
        _out.print(table)
    if job.succeeded:  # one unwrapped line, so terminals keep the URL clickable
        _out.print(f"report: {report_url}  (view it: qat report {job.id} --open)", highlight=False, soft_wrap=True)


def _emit(document: Any, show: Callable[[], None], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document))
    else:
        show()
