"""Starting and stopping the pipeline child that runs an untrusted model.

The child's environment is built from an allowlist, not by removing known secrets: a
credential under a name nobody thought of (``PGPASSWORD``, ``REDIS_URL``, a cloud
token) must not reach code from a user's ``.pt2``. ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``
stops ``torch.export.load`` from unpickling code. The child leads its own process
group so a kill also takes any processes it started, and on Linux it is killed when its
worker dies (SIGKILL, OOM killer): an orphaned child would train on, holding the GPU the
job's next attempt needs. A memory ceiling keeps one job's allocations its own failure.
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
from pathlib import Path

from workers.protocol import LOG_FILE

# variables the child may inherit: locale, paths, and what selects and tunes CPUs/GPUs
_ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH"}
_ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_")
# prctl(2) option: the signal this process gets when its parent dies
PR_SET_PDEATHSIG = 1
# names that look like secrets are refused even if a prefix above allows them
_SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "_KEY")


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


def start_pipeline(workdir: Path, memory_bytes: int | None = None) -> subprocess.Popen[bytes]:
    """Run ``python -m workers.pipeline workdir`` in its own session, logging to ``workdir/log.txt``.

    ``memory_bytes`` caps the child's data memory (``RLIMIT_DATA``: heap and private
    writable mappings). Not ``RLIMIT_AS``: CUDA reserves tens of GB of address space it
    never touches, so an address-space cap would fail every GPU job.
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
            preexec_fn=functools.partial(_prepare_child, memory_bytes),
        )


def _prepare_child(memory_bytes: int | None) -> None:
    """In the child, before exec: set its memory ceiling and, on Linux, SIGKILL when the worker dies."""
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_pipeline(child: subprocess.Popen[bytes]) -> None:
    """Stop the child and everything it started, at once (its results are discarded anyway)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
