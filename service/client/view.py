"""How the ``qat`` client commands (and ``qat demo``) show jobs to people, with rich.

Kept apart from the commands so the demo and the CLI print the same tables and the
same live progress bar; scripts use ``--json`` instead and never see any of this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from quantlib.figures import metric_cell, metric_header, selection_summary, speed_summary
from service.contract import Job, Metrics

_ACCURACY_ROWS = {
    "fp32": "FP32",
    "int8_simulated": "INT8 simulated (PyTorch)",
    "int8_onnxruntime": "INT8 deploy (onnxruntime)",
}
_STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "CANCELLING": "yellow"}


def state_text(state: str) -> str:
    style = _STATE_STYLE.get(state, "cyan")
    return f"[{style}]{state}[/{style}]"


def accuracy_table(metrics: Metrics | None) -> Table | None:
    """The FP32 vs INT8 table from a finished job's metrics; ``None`` before there is one."""
    if metrics is None or not metrics.accuracy:
        return None
    task = metrics.task
    labelled = task is None or task.name != "distillation"  # jobs before tasks: top-1, or "-" without labels
    metric, label = (task.metric, task.label) if task else ("top1", "top-1")
    table = Table(title="FP32 vs INT8 (evaluation data)")
    table.add_column("model")
    if labelled:
        table.add_column(metric_header(metric, label), justify="right")
    table.add_column("agrees with FP32 %", justify="right")
    table.add_column("output SQNR dB", justify="right")
    for key, name in _ACCURACY_ROWS.items():
        row = metrics.accuracy.get(key)
        if row is not None:
            value = [metric_cell(row.metric if task else row.top1, metric)] if labelled else []
            table.add_row(name, *value, _pct(row.agreement), _db(row.sqnr_db))
    captions = []
    if metrics.speed is not None:
        speed = metrics.speed
        captions.append(speed_summary(speed.batch_sizes, speed.latency_ratio, speed.size_ratio, speed.threads))
    if metrics.fine_tune is not None:
        chosen = metrics.fine_tune
        captions.append(selection_summary(chosen.kept, chosen.metric, chosen.calibrated, chosen.fine_tuned))
    captions += [f"warning: {caveat}" for caveat in metrics.caveats]
    table.caption = "\n".join(captions) or None
    return table


def job_summary(job: Job) -> Table:
    """One job as a two-column table: identity, state, where it is, how it ended."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", str(job.id))
    table.add_row("state", state_text(job.state))
    if job.phase and not job.done:
        table.add_row("phase", job.phase)
    if job.progress and not job.done:
        table.add_row("progress", progress_text(job))
    if job.failure:
        who = {True: "your input", False: "the service", None: "unknown"}[job.failure.user_error]
        table.add_row("failure", f"[red]{job.failure.code}[/red] ({who}): {job.failure.message}")
    table.add_row("created", _when(job.created_at))
    if job.finished_at:
        table.add_row("finished", _when(job.finished_at))
    return table


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table()
    table.add_column("job", no_wrap=True, min_width=36)
    table.add_column("state", no_wrap=True)
    table.add_column("phase")
    table.add_column("created (UTC)", no_wrap=True)
    for job in jobs:
        table.add_row(str(job.id), state_text(job.state), "" if job.done else job.phase or "", _when(job.created_at))
    return table


def progress_text(job: Job) -> str:
    progress = job.progress
    if progress is None:
        return ""
    parts = [f"{progress.step}/{progress.total}"]
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch}")
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.eta_s is not None:
        parts.append(f"ETA {_duration(progress.eta_s)}")
    return "  ".join(parts)


def print_files(console: Console, paths: Iterable[Path]) -> None:
    table = Table(title="artifacts")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for path in paths:
        table.add_row(str(path), f"{path.stat().st_size:,}")
    console.print(table)


@contextmanager
def live_progress(console: Console) -> Iterator[Any]:
    """A live bar (state, phase, step/total, loss, ETA); yields the ``on_progress`` callback for ``Client.wait``.

    Each phase has its own step count, so the bar restarts when the phase changes.
    """
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task: TaskID = bar.add_task("waiting", total=None, detail="")

        def update(job: Job) -> None:
            progress = job.progress
            total = progress.total if progress and progress.total else None
            bar.update(
                task,
                description=state_text(job.state)
                if job.done
                else f"{state_text(job.state)} {job.phase or ''}".rstrip(),
                total=total,
                completed=progress.step if progress else 0,
                detail=progress_text(job),
            )

        yield update


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _db(value: float) -> str:
    return f"{value:.1f}"  # an exact match, "inf" on the wire, is parsed to inf and prints so


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def _when(moment: datetime) -> str:
    """A UTC timestamp to the second, for tables."""
    return f"{moment:%Y-%m-%d %H:%M:%S}"
