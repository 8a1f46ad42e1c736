"""The sandboxed child that runs one job's QAT: ``python -m workers.pipeline WORKDIR``.

It runs the user's model, so it is started with no credentials in its environment
(see :mod:`workers.sandbox`) and only reads and writes ``WORKDIR`` (layout in
:mod:`workers.protocol`). Its stdout and stderr are the job's ``log.txt``. It exits 0
with the artifacts in ``WORKDIR/out``, or ``EXIT_REPORTED_ERROR`` after writing
``error.json``; any other exit means it crashed or was killed.

It may start before its job exists (:mod:`workers.children`): it imports what every job
needs, then waits for the ``GO`` line on its stdin, which the worker writes once the
job's inputs and ``job.json`` are in ``WORKDIR``. Until then it has seen no job at all.
"""

from __future__ import annotations

import math
import os
import resource  # here, not in the failure handler: at the memory ceiling even that import fails
import select
import sys
import traceback
from pathlib import Path

from quantlib.errors import QuantlibError, is_out_of_memory
from service.contract import FailureCode
from workers.protocol import (
    CHECKPOINT_DIR,
    CPU_GRACE_S,
    EXIT_REPORTED_ERROR,
    GO,
    OUT_DIR,
    PROGRESS_FILE,
    RUNNING_NAME,
    SCRATCH_DIR,
    WAITING_NAME,
    PipelineError,
    PipelineJob,
    ProgressLine,
)

REPORTING_RESERVE_BYTES = 8 << 20


def warm_up() -> None:
    """Import, and run once on a throwaway layer, what every job needs: seconds a waiting child has spent already.

    torch's ONNX exporter imports and builds its operator tables on first use: a tiny
    export here took a digits job's pipeline from 4.6 to 2.8 s, but costs more than it saves
    when the job is already waiting, so a child started for a waiting job skips it.
    torch's random state is put back: the job seeds what it uses.
    """
    import torch

    import quantlib.data
    import quantlib.modelfile
    import quantlib.run
    import quantlib.spec  # noqa: F401
    from quantlib.export.onnx_export import export_onnx

    if select.select([sys.stdin], [], [], 0)[0]:  # GO (or EOF) is there already
        return
    with torch.random.fork_rng(devices=[]):
        export_onnx(torch.nn.Linear(2, 2), (torch.zeros(2, 2),))


def wait_for_job(workdir: Path) -> PipelineJob | None:
    """The job the worker put in ``workdir`` once it says ``GO``; ``None`` if it closed stdin instead.

    The job's CPU-time limit is set here, before any of its files is opened: the kernel
    counts the seconds spent waiting and importing too, so the limit starts from them.
    """
    if sys.stdin.buffer.readline() != GO:
        return None
    _name_process(RUNNING_NAME)
    job = PipelineJob.read(workdir)
    if job.cpu_seconds is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime) + job.cpu_seconds
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        hard = soft + CPU_GRACE_S if hard == resource.RLIM_INFINITY else min(hard, soft + CPU_GRACE_S)
        resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))
    return job


def _name_process(name: str) -> None:
    """Show in ``ps`` (``/proc/<pid>/comm``) whether this child waits or runs a job."""
    try:
        Path("/proc/self/comm").write_text(name, encoding="ascii")
    except OSError:  # not Linux: the name is only for operators
        pass


def run(workdir: Path, job: PipelineJob) -> None:
    """Load the model and data and run QAT, which leaves the results under their published names."""
    from quantlib.checkpoint import Checkpoints
    from quantlib.data import load_dataset
    from quantlib.modelfile import load_exported_program
    from quantlib.run import run_qat
    from quantlib.spec import parse_spec

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
            checkpoints=Checkpoints(workdir / CHECKPOINT_DIR, workdir / job.resume if job.resume else None),
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
    _name_process(WAITING_NAME)
    try:
        warm_up()
        job = wait_for_job(workdir)
        if job is None:
            return 0
        run(workdir, job)
    except Exception as exc:  # noqa: BLE001 - every failure must reach the parent as a code
        del reserve
        classify(exc).write(workdir)  # first: the code matters more than the traceback
        traceback.print_exc()
        return EXIT_REPORTED_ERROR
    return 0


if __name__ == "__main__":
    status = main(sys.argv)
    # every result file is closed by now; skipping the interpreter's teardown (torch's
    # modules, threads and caches) ends the job 1.6 s sooner
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
