"""Starting and stopping the pipeline child that runs an untrusted model.

The child runs inside the operating system's sandbox (:mod:`workers.jail`) unless an
operator chose ``QAT_SANDBOX=none``. Its environment is built from an allowlist, not by
removing known secrets: a credential under a name nobody thought of (``PGPASSWORD``,
``REDIS_URL``, a cloud token) must not reach code from a user's ``.pt2``. The child
leads its own process group so a kill also takes any processes it started, and on Linux
it is killed when its worker dies (SIGKILL, OOM killer): an orphaned child would train
on, holding the GPU the job's next attempt needs. A memory ceiling keeps one job's
allocations its own failure, a CPU-time ceiling, enforced by the kernel, ends a job that
would compute forever even if its worker stopped watching the clock, a process ceiling
stops a fork bomb, and its output goes through a bounded log (:mod:`workers.childlog`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from service.contract import FailureCode
from workers.childlog import BoundedLog
from workers.jail import JOB_ROOT, Jail
from workers.protocol import CPU_GRACE_S, GO, PipelineError

# variables the child may inherit: locale, paths, and what selects and tunes CPUs/GPUs
_ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH"}
_ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_")
# prctl(2) options: the signal this process gets when its parent dies; no gaining privileges by exec
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
# names that look like secrets are refused even if a prefix above allows them
_SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "_KEY")
# what sets a child's threads: OpenMP (torch's intra-op pool), MKL and OpenBLAS
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ChildLimits:
    """Ceilings of one pipeline child, all but the log's enforced by the kernel; ``None`` is no limit."""

    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    max_processes: int | None = None
    log_bytes: int = 8 << 20
    # the child's CPU threads (OMP_NUM_THREADS and the like; quantlib sizes torch and onnxruntime by it)
    threads: int = 1

    def for_job(self, max_runtime_s: int | None) -> ChildLimits:
        """These limits for a job with ``spec.max_runtime_s``: CPU time at most that many seconds on every CPU.

        All the child's threads can use at most ``max_runtime_s`` x CPUs before the
        worker's wall-clock deadline, so this never ends a job early; it is the kernel's
        backstop for a worker that stopped watching (a hung database call, say).
        """
        if max_runtime_s is None:
            return self
        derived = max_runtime_s * (os.cpu_count() or 1)
        return replace(self, cpu_seconds=min(derived, self.cpu_seconds or derived))

    def exit_error(self, signal_number: int | None) -> PipelineError | None:
        """The failure a child's death by ``signal_number`` means if one of these limits sent it; else ``None``."""
        if signal_number != signal.SIGXCPU:
            return None
        message = (
            f"the job used up its CPU-time limit of {self.cpu_seconds} CPU-seconds (all its threads together; "
            "the worker's QAT_CHILD_CPU_SECONDS, or spec.max_runtime_s x its CPUs); train fewer epochs or steps, "
            "or ask for a higher limit"
        )
        return PipelineError(FailureCode.TIMEOUT, message, user_error=True)


def child_environment(parent: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment of a pipeline child: allowlisted variables of ``parent``, nothing secret.

    ``HOME`` is the job's work directory, so libraries that look for credential files
    under the home directory (``~/.aws``, ``~/.pgpass``) find none.
    """
    env = {
        name: value
        for name, value in parent.items()
        if (name in _ALLOWED or name.startswith(_ALLOWED_PREFIXES))
        and not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }
    env["HOME"] = str(home)
    env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# what the child runs on its folder: the pipeline (tests put other programs in its place)
PIPELINE = ("-m", "workers.pipeline")


def start_pipeline(
    folder: Path,
    log: BoundedLog,
    limits: ChildLimits,
    jail: Jail | None,
    program: Sequence[str] = PIPELINE,
) -> subprocess.Popen[bytes]:
    """Run ``python -m workers.pipeline`` on ``folder`` in its own session, its output drained into ``log``.

    The pipeline imports what a job needs and waits: :func:`release_pipeline` starts it on
    the job in ``folder``, so a worker can start a job's child before it has the job.
    With a ``jail`` the child sees ``folder`` as ``/job`` and nothing of the worker; with
    none (``QAT_SANDBOX=none``) it runs as the worker's user with only the limits below.
    ``limits.memory_bytes`` caps the child's data memory (``RLIMIT_DATA``: heap and
    private writable mappings). Not ``RLIMIT_AS``: CUDA reserves tens of GB of address
    space it never touches, so an address-space cap would fail every GPU job.
    ``limits.cpu_seconds`` is ``RLIMIT_CPU``: the kernel sends SIGXCPU there, which ends
    the child (Python leaves SIGXCPU at its default), and SIGKILL ``CPU_GRACE_S`` later
    if the child survived it. ``-P``: the working folder, which the child writes, is not
    on its import path.
    """
    where = JOB_ROOT if jail else folder
    argv = [sys.executable, "-P", *program, str(where)]
    if jail is not None:
        jail.prepare(folder)
        argv = jail.command(argv, folder, limits.max_processes)
    env = child_environment(os.environ, home=where)
    env.update(dict.fromkeys(THREAD_VARIABLES, str(limits.threads)))
    if jail is not None:
        env["TMPDIR"] = "/tmp"  # the job's own tmp folder inside the sandbox
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=write_end,
            stderr=write_end,
            start_new_session=True,
            preexec_fn=functools.partial(_prepare_child, limits, jail is None),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    log.start(read_end)
    return child


def release_pipeline(child: subprocess.Popen[bytes]) -> None:
    """Start a waiting pipeline child on the job now in its folder (inputs and ``job.json``)."""
    assert child.stdin is not None
    try:
        child.stdin.write(GO)
        child.stdin.close()
    except BrokenPipeError:  # it ended while it waited: how is the exit status's and error.json's to say
        pass


def _prepare_child(limits: ChildLimits, unconfined: bool) -> None:
    """In the child, before exec: set its ceilings and, on Linux, SIGKILL when the worker dies.

    No core files: SIGXCPU's default action dumps one, gigabytes for a model in memory.
    Unconfined, the process limit and ``no_new_privs`` are set here; in the sandbox,
    bubblewrap and ``prlimit`` set them inside its namespaces.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_S))
    if unconfined and limits.max_processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if unconfined:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def killed_by(returncode: int, jailed: bool) -> int | None:
    """The signal that ended a child with ``returncode``, if one did.

    Python reports a signal as ``-n``; bubblewrap (``jailed``) exits ``128 + n`` when the
    process inside was ended by signal ``n``, and ``-n`` when bubblewrap itself was.
    """
    if returncode < 0:
        return -returncode
    return returncode - 128 if jailed and returncode > 128 else None


def kill_pipeline(child: subprocess.Popen[bytes]) -> None:
    """Stop the child and everything it started, at once (its results are discarded anyway)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
    if child.stdin is not None:
        child.stdin.close()
