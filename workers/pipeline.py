"""The sandboxed child that runs one job's QAT: ``python -m workers.pipeline WORKDIR``.

It runs the user's model, so it is started with no credentials in its environment
(see :mod:`workers.sandbox`) and only reads and writes ``WORKDIR`` (layout in
:mod:`workers.protocol`). Its stdout and stderr are the job's ``log.txt``. It exits 0
with the artifacts in ``WORKDIR/out``, or ``EXIT_REPORTED_ERROR`` after writing
``error.json``; any other exit means it crashed or was killed.
"""

from __future__ import annotations

import os
import resource  # here, not in the failure handler: at the memory ceiling even that import fails
import sys
import traceback
from pathlib import Path

from quantlib.errors import QuantlibError, is_out_of_memory
from service.contract import FailureCode
from workers.protocol import (
    EXIT_REPORTED_ERROR,
    OUT_DIR,
    PROGRESS_FILE,
    SCRATCH_DIR,
    PipelineError,
    PipelineJob,
    ProgressLine,
)

REPORTING_RESERVE_BYTES = 8 << 20


def run(workdir: Path) -> None:
    """Load the model and data and run QAT, which leaves the results under their published names."""
    from quantlib.data import load_dataset
    from quantlib.modelfile import load_exported_program
    from quantlib.run import run_qat
    from quantlib.spec import parse_spec

    job = PipelineJob.read(workdir)
    out = workdir / OUT_DIR
    with open(workdir / PROGRESS_FILE, "a", encoding="utf-8", buffering=1) as progress:

        def on_progress(phase: str, step: int, total: int, loss: float | None, epoch: int | None) -> None:
            progress.write(ProgressLine(phase, step, total, loss, epoch).to_json() + "\n")

        on_progress("loading", 0, 1, None, None)
        spec = parse_spec(job.spec)
        program = load_exported_program(workdir / job.model)
        # mapped from the job's folder (decoded images written there): memory bounded by the batch, not the data
        dataset = load_dataset(workdir / job.data, spec.preprocess, workdir / SCRATCH_DIR)
        run_qat(
            program,
            dataset,
            out,
            config_file=workdir / job.config if job.config else None,
            spec=spec,
            on_progress=on_progress,
        )


def classify(exc: BaseException) -> PipelineError:
    """The failure code, message and fault for an exception raised by :func:`run`."""
    if isinstance(exc, QuantlibError):
        where = f" ({exc.field})" if exc.field else ""
        return PipelineError(exc.code, f"{exc.message}{where}", user_error=True)
    # refused memory deep in CPython (an import, say) can lose its MemoryError and surface
    # as "SystemError: error return without exception set"; under a ceiling, that is why
    if is_out_of_memory(exc) or (isinstance(exc, SystemError) and _memory_ceiling()):
        return PipelineError(
            FailureCode.OUT_OF_MEMORY,
            f"the job ran out of memory{_memory_ceiling()}; lower spec.batch_size or submit a smaller model or dataset",
            user_error=True,
        )
    # the exception's text may name paths inside the worker: the traceback is in log.txt
    return PipelineError(
        FailureCode.INTERNAL,
        f"the quantization pipeline failed unexpectedly ({type(exc).__name__}); see log.txt",
        user_error=False,
    )


def _memory_ceiling() -> str:
    """The worker's per-job memory limit in words, if it set one."""
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return "" if limit == resource.RLIM_INFINITY else f" (this worker allows a job {limit >> 20} MiB)"


def main(argv: list[str]) -> int:
    workdir = Path(argv[1])
    # memory held back for reporting: a job that fails at its memory ceiling leaves none, and
    # printing the traceback then failed too (MemoryError inside the handler), so no code
    # reached the worker and the job read INTERNAL instead of OUT_OF_MEMORY
    reserve = bytearray(REPORTING_RESERVE_BYTES)
    # names only, never values: proves to the log's reader what the sandbox could see
    print("environment variables:", " ".join(sorted(os.environ)), flush=True)
    try:
        run(workdir)
    except Exception as exc:  # noqa: BLE001 - every failure must reach the parent as a code
        del reserve
        classify(exc).write(workdir)  # first: the code matters more than the traceback
        traceback.print_exc()
        return EXIT_REPORTED_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
