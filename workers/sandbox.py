"""Starting and stopping the pipeline child that runs an untrusted model.

The child's environment is built from an allowlist, not by removing known secrets: a
credential under a name nobody thought of (``PGPASSWORD``, ``REDIS_URL``, a cloud
token) must not reach code from a user's ``.pt2``. ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``
stops ``torch.export.load`` from unpickling code. The child leads its own process
group so a kill also takes any processes it started, and on Linux it is killed when its
worker dies (SIGKILL, OOM killer): an orphaned child would train on, holding the GPU the
job's next attempt needs. A memory ceiling keeps one job's allocations its own failure,
and a CPU-time ceiling, enforced by the kernel, ends a job that would compute forever
even if its worker stopped watching the clock.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from workers.protocol import LOG_FILE, PipelineError

# variables the child may inherit: locale, paths, and what selects and tunes CPUs/GPUs
_ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH"}
_ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_")
# prctl(2) option: the signal this process gets when its parent dies
PR_SET_PDEATHSIG = 1
# names that look like secrets are refused even if a prefix above allows them
_SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "_KEY")
# CPU seconds between SIGXCPU (the soft limit, which ends the child) and SIGKILL (the hard one)
CPU_GRACE_S = 5


@dataclass(frozen=True)
class ChildLimits:
    """Kernel-enforced ceilings of one pipeline child; ``None`` is no limit."""

    memory_bytes: int | None = None
    cpu_seconds: int | None = None

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

    def exit_error(self, returncode: int) -> PipelineError | None:
        """The failure a child's death by one of these limits means; ``None`` for any other ending."""
        if returncode != -signal.SIGXCPU:
            return None
        message = (
            f"the job used up its CPU-time limit of {self.cpu_seconds} CPU-seconds (all its threads together; "
            "the worker's QAT_CHILD_CPU_SECONDS, or spec.max_runtime_s x its CPUs); train fewer epochs or steps, "
            "or ask for a higher limit"
        )
        return PipelineError("TIMEOUT", message, user_error=True)


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


def start_pipeline(workdir: Path, limits: ChildLimits) -> subprocess.Popen[bytes]:
    """Run ``python -m workers.pipeline workdir`` in its own session, logging to ``workdir/log.txt``.

    ``limits.memory_bytes`` caps the child's data memory (``RLIMIT_DATA``: heap and
    private writable mappings). Not ``RLIMIT_AS``: CUDA reserves tens of GB of address
    space it never touches, so an address-space cap would fail every GPU job.
    ``limits.cpu_seconds`` is ``RLIMIT_CPU``: the kernel sends SIGXCPU there, which ends
    the child (Python leaves SIGXCPU at its default), and SIGKILL ``CPU_GRACE_S`` later
    if the child survived it.
    """
    with open(workdir / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.pipeline", str(workdir)],
            cwd=workdir,
            env=child_environment(os.environ, home=workdir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_prepare_child, limits),
        )


def _prepare_child(limits: ChildLimits) -> None:
    """In the child, before exec: set its ceilings and, on Linux, SIGKILL when the worker dies.

    No core files: SIGXCPU's default action dumps one, gigabytes for a model in memory.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_S))
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_pipeline(child: subprocess.Popen[bytes]) -> None:
    """Stop the child and everything it started, at once (its results are discarded anyway)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
