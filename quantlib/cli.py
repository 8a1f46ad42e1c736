"""``qat quantize``: the library as one command, from a ``.pt2`` and an ``.npz`` to INT8 ONNX.

Torch loads inside the command, so ``qat --help`` and commands that never touch a
model stay fast. Input mistakes print one line, ``error [CODE] field: message``, and
exit with status 2. The progress bar goes to stderr when it is a terminal, the tables
(or, with ``--json``, the report) to stdout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from quantlib.config import check_calibration, load_config, load_simple_config
from quantlib.config.parse import strict_json
from quantlib.data import load_dataset
from quantlib.errors import QuantlibError, SpecError, is_out_of_memory, one_line
from quantlib.figures import metric_cell, metric_header, speed_summary
from quantlib.modelfile import load_exported_program
from quantlib.spec import AccuracyTarget, QATSpec, Target, parse_spec
from quantlib.tasks import TaskSetting

if TYPE_CHECKING:
    from quantlib.train import Report

USER_ERROR_EXIT = 2
_ROWS = {"fp32": "FP32", "int8_simulated": "INT8 simulated (PyTorch)", "int8_onnxruntime": "INT8 deploy (onnxruntime)"}
_FILES = {
    "deploy_model": "deploy model (int8 weights)",
    "fake_quant_model": "fake-quant model",
    "record": "record",
    "record_json": "record (JSON)",
    "config": "config",
    "report": "report",
    "report_html": "report (HTML, for a browser)",
}


class PhaseBar:
    """One bar per pipeline phase; the loss shows while training."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, step: int, total: int, loss: float | None, epoch: int | None) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=max(total, 1), status="")
        status = f"epoch {epoch}  loss {loss:.4f}" if loss is not None else None
        fields: dict[str, Any] = {"status": status} if status is not None else {}
        self.progress.update(self.tasks[phase], completed=step, total=max(total, 1), **fields)


def _progress(console: Console, disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=True,
    )


def _quiet_libraries() -> None:
    """Torch logs and warns about things a user cannot act on (optional packages of the
    ONNX exporter, the traceback of a file it failed to load that we report in one line).

    Torch sets its loggers' levels when it is imported, so this imports it first.
    """
    import torch  # noqa: F401

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("torch").setLevel(logging.ERROR)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _summary(report: Report) -> Table:
    table = Table(title="FP32 vs INT8 on " + report.dataset["eval_source"].replace("x_", "") + " data")
    task = report.task
    table.add_column("model")
    if task.labelled:
        table.add_column(metric_header(task.metric, task.metric_label), justify="right")
    table.add_column("agrees with FP32 %", justify="right")
    table.add_column("output SQNR dB", justify="right")
    for key, label in _ROWS.items():
        row = report.accuracy[key]
        metric = [metric_cell(row.metric, task.metric)] if task.labelled else []
        table.add_row(label, *metric, _pct(row.agreement), _db(row.sqnr_db))
    return table


def _spec_values(**options: Any) -> dict[str, Any]:
    """Only the options given: QATSpec owns the defaults; the tuning options nest under ``accuracy``."""
    values = {key: value for key, value in options.items() if value is not None}
    if "preprocess" in values:
        values["preprocess"] = strict_json(values["preprocess"], field="preprocess", error=SpecError)
    accuracy = {key: values.pop(key) for key in AccuracyTarget.model_fields if key in values}
    return {**values, "accuracy": accuracy} if accuracy else values


def _tuning_lines(tuning: dict[str, Any]) -> list[str]:
    """The tuner's verdict and what each trial changed, one line per change."""
    lines = [f"tuning: {tuning['verdict']} (kept trial {tuning['best_trial']})"]
    for trial in tuning["trials"]:
        lines.append(f"  trial {trial['index']}: drop {trial['drop']:.4g}")
        lines += [f"    {change}" for change in trial["changes"]]
    return lines


def _default_threads() -> int:
    """``OMP_NUM_THREADS`` where set (what a worker gives its jobs), else the CPUs this process may use."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))


def _precheck_config(config_file: Path | None, config_defination: Path | None, spec: QATSpec) -> None:
    """What can be checked without the model, before torch loads (seconds): syntax, keys,
    values and the calibration budget. Layer names are checked against the model later."""
    if config_file is not None:
        check_calibration(load_config(config_file).batch_num, spec.batch_size)
    if config_defination is not None:
        check_calibration(load_simple_config(config_defination).batch_num, spec.batch_size)


def _default(name: str) -> Any:
    return QATSpec.model_fields[name].default


def _internal_error(exc: Exception) -> NoReturn:
    """A fault of ours, not the input's: one line and exit 1, the traceback only with ``QAT_DEBUG=1``."""
    if os.environ.get("QAT_DEBUG") == "1":
        raise exc
    click.echo(
        f"error [INTERNAL] quantlib: {type(exc).__name__}: {one_line(exc)} (a fault in qat-service, not in your "
        "input; run again with QAT_DEBUG=1 for the traceback and report it)",
        err=True,
    )
    raise SystemExit(1) from None


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.pt2")
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="dataset .npz (x_train or x_train.<input name> per input, y_train, x_eval, y_eval)",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="config.json (AMCT format, version 1); default: generated",
)
@click.option(
    "--config-defination",
    type=click.Path(dir_okay=False, path_type=Path),
    help="simplified config (JSON/YAML) to generate config.json from",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="output directory")
@click.option("--epochs", type=int, help=f"fine-tuning epochs, 0 = calibrate only [default: {_default('epochs')}]")
@click.option("--lr", type=float, help=f"learning rate [default: {_default('lr')}]")
@click.option("--batch-size", type=int, help=f"training and calibration batch size [default: {_default('batch_size')}]")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), help=f"[default: {_default('optimizer')}]")
@click.option(
    "--loss",
    type=click.Choice(["auto", "ce", "mse", "kl"]),
    help="auto: the labels' own loss, mse distillation without",
)
@click.option(
    "--task",
    type=click.Choice(get_args(TaskSetting)),
    help="what the labels are; auto reads it from y_train [default: auto]",
)
@click.option("--ignore-index", type=int, help="segmentation: the label of ignored pixels [default: 255]")
@click.option(
    "--preprocess",
    help='image archives: JSON, e.g. \'{"resize": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}\'',
)
@click.option("--seed", type=int, help=f"[default: {_default('seed')}]")
@click.option(
    "--freeze-bn/--update-bn", default=None, help="keep BatchNorm statistics fixed while fine-tuning [default: freeze]"
)
@click.option("--device", type=str, help="auto, cpu, cuda or cuda:N [default: auto: the GPU if torch sees one]")
@click.option(
    "--target",
    type=click.Choice(list(get_args(Target))),
    help=f"the runtime the INT8 model is for: its Q/DQ form, simulated by QAT [default: {_default('target')}]",
)
@click.option(
    "--max-drop",
    type=float,
    help="tune the config until the metric drops at most this much (e.g. 0.01); enables tuning",
)
@click.option(
    "--metric",
    type=click.Choice(["top1", "sqnr"]),
    help="tuning metric; sqnr drop = output noise/signal [default: top1]",
)
@click.option("--max-trials", type=int, help="tuning: QAT runs at most, the first included [default: 6]")
@click.option(
    "--weight-bits-budget", type=float, help="tuning: average weight bits (4..8); INT4 for the least sensitive layers"
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for torch and onnxruntime [default: OMP_NUM_THREADS, else every CPU this process may use]",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON on stdout, no progress bar")
def quantize(
    model: Path,
    data: Path,
    config_file: Path | None,
    config_defination: Path | None,
    out: Path,
    threads: int | None,
    as_json: bool,
    **spec_options: Any,
) -> None:
    """Calibrate, fine-tune (QAT), evaluate FP32 vs INT8 and export MODEL.pt2 as INT8 ONNX."""
    stdout, stderr = Console(), Console(stderr=True)
    try:
        spec = parse_spec(_spec_values(**spec_options))
        _precheck_config(config_file, config_defination, spec)
        _quiet_libraries()
        import torch

        from quantlib.run import run_qat

        torch.set_num_threads(threads or _default_threads())

        # the dataset stays on disk, mapped (decoded images are written there): memory bounded by the batch
        with (
            tempfile.TemporaryDirectory(prefix="qat-arrays-") as scratch,
            _progress(stderr, disable=as_json or not stderr.is_terminal) as progress,
        ):
            dataset = load_dataset(data, spec.preprocess, Path(scratch))
            program = load_exported_program(model)
            report = run_qat(
                program,
                dataset,
                out,
                config_file=config_file,
                config_defination=config_defination,
                spec=spec,
                on_progress=PhaseBar(progress),
            )
    except QuantlibError as exc:  # the config, spec, data or model; a run that diverged
        message = " ".join(exc.message.split())
        click.echo(f"error [{exc.code}] {exc.field or 'input'}: {message}", err=True)
        raise SystemExit(USER_ERROR_EXIT) from None
    except Exception as exc:  # noqa: BLE001 - out of memory is the job's size; anything else is our fault
        if not is_out_of_memory(exc):
            _internal_error(exc)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error [OUT_OF_MEMORY] model: {reason}; lower --batch-size or use a smaller model", err=True)
        raise SystemExit(USER_ERROR_EXIT) from None
    if as_json:
        files = {key: str(path) for key, path in report.files.items()}
        click.echo(json.dumps({**report.to_dict(), "files": files}, indent=2))
        return
    stdout.print(_summary(report))
    if report.speed is not None:
        speed = report.speed
        line = speed_summary(speed.batch_sizes, speed.latency_ratio, speed.size_ratio, speed.threads)
        stdout.print(line, highlight=False, soft_wrap=True)
    if report.selection is not None:
        stdout.print(report.selection.summary(), highlight=False, soft_wrap=True)
    for caveat in report.caveats:
        stdout.print(f"warning: {caveat}", highlight=False, soft_wrap=True)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.timings_s.items())
    stdout.print(f"took {sum(report.timings_s.values()):.1f} s ({phases})", highlight=False, soft_wrap=True)
    for line in _tuning_lines(report.tuning) if report.tuning else []:
        stdout.print(line, highlight=False, soft_wrap=True)
    for key, label in _FILES.items():
        stdout.print(f"{label:<30} {report.files[key]}", highlight=False, soft_wrap=True)
