"""The installed ``qat`` command, run as a user runs it: a separate process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QAT = Path(sys.executable).parent / "qat"


def qat(*args: object) -> subprocess.CompletedProcess[str]:
    assert QAT.exists(), f"{QAT} is missing: run `pip install -e '.[test]'` to install the console script"
    return subprocess.run([str(QAT), *map(str, args)], check=False, capture_output=True, text=True, timeout=300)


def assert_user_error(run: subprocess.CompletedProcess[str], code: str, field: str) -> None:
    """Exit status 2 and one ``error [CODE] field: ...`` line, nothing else on stderr."""
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.count("\n") == 1 and run.stderr.endswith("\n"), run.stderr
    assert run.stderr.startswith(f"error [{code}] {field}: "), run.stderr
