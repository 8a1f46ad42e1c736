"""What the job sandbox costs at start: the same commands with and without bubblewrap, interleaved.

A job's child starts once per job, so the sandbox's price is paid once per job: building
the namespaces and the filesystem view before Python starts. Measured as the median wall
time of ``python -c pass`` (the sandbox's own cost shows) and ``python -c 'import torch'``
(what a job's child does first), alternating plain and sandboxed runs so that load on the
machine hits both alike.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workers.jail import Jail

COMMANDS = {"python -c pass": "pass", "python -c 'import torch'": "import torch"}


def measure(rounds: int) -> list[dict[str, Any]]:
    """One row per command: plain and sandboxed medians in ms, and what the sandbox adds."""
    jail = Jail()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qat-bench-sandbox-") as scratch:
        folder = Path(scratch)
        jail.prepare(folder)
        for label, code in COMMANDS.items():
            argv = [sys.executable, "-c", code]
            plain, jailed = [], []
            for _ in range(rounds):
                plain.append(_seconds(argv))
                jailed.append(_seconds(jail.command(argv, folder, 512)))
            rows.append(
                {
                    "command": label,
                    "rounds": rounds,
                    "plain_ms": round(statistics.median(plain) * 1000, 1),
                    "sandboxed_ms": round(statistics.median(jailed) * 1000, 1),
                    "added_ms": round((statistics.median(jailed) - statistics.median(plain)) * 1000, 1),
                }
            )
    return rows


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - started
