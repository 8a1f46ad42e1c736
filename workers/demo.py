"""``qat demo`` (``make demo``): the whole service end to end on one machine, in a few minutes.

It runs what a team and an operator would: ``qat db upgrade``, the API, the dispatcher
and one worker as real processes; a demo team; the digits example exported to ``.pt2``;
a job submitted through :class:`service.client.Client` with the default config; live
progress; the artifacts downloaded and checked; the FP32 vs INT8 table. Every process
it started is stopped at the end, on Ctrl-C and on errors alike.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from service.client import Client, ClientError, Job
from service.client.view import accuracy_table, job_summary, live_progress, print_files
from service.contract import OUTPUT_FILES
from workers.local_deployment import (
    OPTIONAL_SETTINGS,
    SERVICE_SETTINGS,
    DeploymentError,
    LocalDeployment,
    embedded_settings,
)

console = Console()


@click.command("demo")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for everything the demo writes [default: a fresh var/demo/<time>].",
)
@click.option(
    "--example-epochs", type=click.IntRange(min=0), default=5, show_default=True, help="FP32 training of the example."
)
@click.option("--epochs", type=click.IntRange(min=0), help="QAT epochs of the job [default: the service's].")
@click.option(
    "--timeout", "timeout_s", type=float, default=240, show_default=True, help="Give up on the job after this."
)
def demo(root: Path | None, example_epochs: int, epochs: int | None, timeout_s: float) -> None:
    """Start a local deployment, quantize the digits example through it, print the result, stop it."""
    started = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = (root or Path("var") / "demo" / stamp).resolve()
    # `kill` should clean up like Ctrl-C does: SystemExit unwinds through LocalDeployment.__exit__
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    settings = embedded_settings(root)
    _describe_backends(settings)
    try:
        with LocalDeployment(root, settings, worker_name=f"demo-worker-{stamp}") as deployment:
            job = _run(deployment, root, f"demo-{stamp}", example_epochs, epochs, timeout_s)
            console.print(f"stopping {', '.join(f'{n} (pid {p})' for n, p in deployment.pids().items())}")
    except (DeploymentError, ClientError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        console.print(f"process logs are in {root}")
        sys.exit(3)
    console.print(f"all processes stopped; logs in {root}")
    console.print(f"[bold]demo wall time: {time.monotonic() - started:.1f} s[/bold]")
    sys.exit(0 if job.succeeded else 1)


def _run(
    deployment: LocalDeployment, root: Path, team: str, example_epochs: int, epochs: int | None, timeout_s: float
) -> Job:
    console.rule("1. start the service")
    url = deployment.start()
    for name, pid in deployment.pids().items():
        console.print(f"  {name:<10} pid {pid:<7} log {root / (name + '.log')}")
    token = deployment.create_team(team)
    console.print(f"  API at {url}; team {team!r} created")

    console.rule("2. export the example model")
    from quantlib.examples.digits import write_example  # torch: only once the service is up

    model, data = write_example(root / "example", epochs=example_epochs)
    console.print(f"  digits CNN trained {example_epochs} epochs (FP32): {model}, {data}")

    console.rule("3. submit it with the default config and follow it")
    spec: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    with Client(url, token) as client:
        job = client.submit(model, data=data, spec=spec)
        console.print(f"  job {job.id}")
        with live_progress(console) as show:

            def on_progress(current: Job) -> None:
                deployment.check_alive()
                show(current)

            job = client.wait(job.id, on_progress=on_progress, timeout_s=timeout_s)
        console.print(job_summary(job))
        if not job.succeeded:
            console.print(f"worker log (last lines):\n{deployment.log('worker')[-2000:]}")
            return job

        console.rule("4. download the artifacts (sha256 checked)")
        files = client.download(job.id, root / "results")
    table = accuracy_table(job.metrics)
    if table is not None:
        console.print(table)
    print_files(console, files)
    console.print(f"INT8 model: [bold]{root / 'results' / OUTPUT_FILES['deploy_model']}[/bold]")
    return job


def _describe_backends(settings: dict[str, str]) -> None:
    """Say which backends run; values from the environment are not echoed (they may hold passwords)."""
    from_env = [name for name in (*SERVICE_SETTINGS, *OPTIONAL_SETTINGS) if os.environ.get(name)]
    if from_env:
        console.print("backends from the environment: " + ", ".join(from_env))
    else:
        console.print("embedded defaults: SQLite job store, local artifact folder, filesystem broker")
    for name in SERVICE_SETTINGS:
        if name not in from_env:
            console.print(f"  {name}={settings[name]}")
