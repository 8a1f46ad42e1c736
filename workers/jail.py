"""The operating system's walls around a job's pipeline child: bubblewrap.

A loader hole must not become access to the service. bubblewrap (Debian's ``bubblewrap``,
the sandbox Flatpak uses) puts the child in its own network namespace (loopback only,
nothing listening), its own pid namespace (the worker and every other process are
invisible, ``/proc`` shows only the sandbox), IPC and UTS namespaces, with
``no_new_privs`` set and every capability dropped. Its filesystem is built from nothing:
the operating system's ``/usr`` and the Python installation read-only, a fresh ``/proc``
and ``/dev``, and the job's folder as ``/job``, the only writable place. The worker's
home, configuration, repository checkout and other jobs' folders are not there at all.

A worker running as root runs the child as an unprivileged uid (``setpriv``), so
``RLIMIT_NPROC`` applies (the kernel never enforces it on root); an unprivileged worker
gets a user namespace instead (bubblewrap's unprivileged mode), whose own uid count the
limit then applies to. ``prlimit`` sets that limit inside, after the namespaces exist.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.errors import SandboxUnavailable

BWRAP = "bwrap"
# where the job's folder appears inside the sandbox
JOB_ROOT = Path("/job")
# the packages the child imports from this checkout (the rest comes from site-packages)
CHILD_PACKAGES = ("quantlib", "workers")
# and single modules of other packages: the wire contract (failure codes), not the server's code
CHILD_MODULES = ("service", "service.contract")
# top-level system paths that are links on merged-/usr systems and folders elsewhere
_SYSTEM_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# the few files of /etc that the dynamic loader and the C library read
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
# CPU topology (OpenMP reads it) and, where there are GPUs, what the NVIDIA driver reads
_SYS = ("/sys/devices/system/cpu",)
_GPU_SYS = ("/sys/bus", "/sys/class", "/sys/devices")


@dataclass(frozen=True)
class Jail:
    """How to run a command inside the sandbox; ``uid`` is the user it runs as when the worker is root."""

    uid: int = 65534

    def command(self, argv: Sequence[str], folder: Path, max_processes: int | None = None) -> list[str]:
        """``argv`` run inside the sandbox, with ``folder`` as ``/job`` (its working directory).

        ``max_processes`` is the sandbox's ``RLIMIT_NPROC`` (threads count too).
        """
        root = os.geteuid() == 0
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        if not root:  # the child may then not make user namespaces of its own (a kernel attack surface)
            namespaces += ["--unshare-user", "--disable-userns"]
        # setpriv needs these to change uid; it drops every one of them on the way
        keep = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"] if root else []
        job = ["--bind", str(folder), str(JOB_ROOT), "--bind", str(folder / "tmp"), "/tmp", "--chdir", str(JOB_ROOT)]
        inside = list(argv)
        if max_processes is not None:
            inside = ["prlimit", f"--nproc={max_processes}:{max_processes}", "--", *inside]
        if root:
            drop = [
                f"--reuid={self.uid}",
                f"--regid={self.uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ]
            inside = ["setpriv", *drop, "--", *inside]
        # the job's folders before the Python paths: a checkout or venv under /tmp stays visible
        return [
            BWRAP,
            *namespaces,
            "--die-with-parent",
            "--new-session",
            *keep,
            *_system(),
            *job,
            *_python_binds(),
            "--",
            *inside,
        ]

    def prepare(self, folder: Path) -> None:
        """Make ``folder`` (and its ``tmp``) the child's own: it is the only place the child may write."""
        (folder / "tmp").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (folder, folder / "tmp"):
                os.chown(path, self.uid, self.uid)
                path.chmod(0o700)

    def check(self, scratch: Path) -> None:
        """Run ``true`` in the sandbox once: :class:`SandboxUnavailable` if it cannot be built here."""
        if shutil.which(BWRAP) is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap), or set "
                "QAT_SANDBOX=none on a trusted single-user host",
                field="QAT_SANDBOX",
            )
        scratch.mkdir(parents=True, exist_ok=True)
        self.prepare(scratch)
        probe = subprocess.run(
            self.command([sys.executable, "-c", "pass"], scratch),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if probe.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap cannot build the job sandbox on this host ({probe.stderr.strip() or probe.returncode}); "
                "it needs user or mount namespaces (in a container: the seccomp profile and settings in deploy/), "
                "or set QAT_SANDBOX=none on a trusted single-user host",
                field="QAT_SANDBOX",
            )


def _system() -> list[str]:
    """bubblewrap's arguments for the operating system's part of the child's view."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_ROOTS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC + _SYS:
        args += ["--ro-bind-try", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    gpus = sorted(str(path) for path in Path("/dev").glob("nvidia*"))
    for path in gpus:
        args += ["--dev-bind", path, path]
    if gpus:
        for path in _GPU_SYS:
            args += ["--ro-bind-try", path, path]
    return args


def _python_binds() -> list[str]:
    """bubblewrap's arguments for the interpreter and packages, read-only at their own paths."""
    args: list[str] = []
    made: set[Path] = set()
    for path in _python_paths():
        for parent in reversed(path.parents):  # bubblewrap would create missing parents 0700
            if parent != Path("/") and parent not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--ro-bind", str(path), str(path)]
    return args


def _python_paths() -> list[Path]:
    """The interpreter, the environment and the child's own packages: read-only, nothing beside them.

    Only these folders of a source checkout, never the checkout itself: its ``var/`` may
    hold the embedded database and artifacts of every team.
    """
    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent}
    for name in CHILD_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths.update(Path(location) for location in spec.submodule_search_locations)
    for name in CHILD_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            paths.add(Path(spec.origin))
    for variable in ("PYTHONPATH", "LD_LIBRARY_PATH"):  # extra site folders, CUDA libraries
        paths.update(Path(entry) for entry in os.environ.get(variable, "").split(os.pathsep) if entry)
    return _outermost(path.resolve() for path in paths if path.is_absolute() and path.exists())


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without those inside another one or inside ``/usr`` (already bound)."""
    unique = sorted(set(paths), key=lambda path: len(path.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path == outer or outer in path.parents for outer in [Path("/usr"), *kept]):
            kept.append(path)
    return kept


def jail_for(sandbox: str, uid: int) -> Jail | None:
    """The sandbox a worker's settings ask for (``QAT_SANDBOX``, ``QAT_SANDBOX_UID``); ``None`` for ``none``."""
    return Jail(uid) if sandbox == "bwrap" else None
