"""An attacker's program, run by the tests inside the job sandbox in place of the pipeline.

``python sandbox_attack.py /job`` reads its targets from ``/job/targets.json``, tries each
escape, and writes what happened to ``/job/result.json`` (one entry per attempt: what it
got, or the error that stopped it), then prints ``print_bytes`` bytes to stdout. Only the
standard library: inside the sandbox nothing else of the worker's is certain to be there.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


def attempt(action: Any) -> dict[str, Any]:
    """``{"ok": result}`` if ``action()`` worked, ``{"error": "..."}`` if it raised."""
    try:
        return {"ok": action()}
    except Exception as exc:  # noqa: BLE001 - every failure is the answer
        return {"error": f"{type(exc).__name__}: {exc}"}


def connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return "connected"


def read(path: str) -> str:
    return Path(path).read_text(errors="replace")[:4096]


def write(path: str) -> str:
    Path(path).write_text("escaped")
    return "written"


def fork_bomb(count: int) -> int:
    """Fork up to ``count`` sleeping children; returns how many it got (it raises at the first refusal)."""
    started = 0
    try:
        for _ in range(count):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            started += 1
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} after {started} forks") from None
    return started


def processes() -> list[str]:
    """Every process this program can see: its pid and command line."""
    seen = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            command = attempt(lambda e=entry: (e / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            seen.append(f"{entry.name} {command}")
    return seen


def main(folder: Path) -> None:
    targets = json.loads((folder / "targets.json").read_text())
    result = {f"connect {name}": attempt(lambda p=port: connect(p)) for name, port in targets["ports"].items()}
    result["worker environ"] = attempt(lambda: read(f"/proc/{targets['worker_pid']}/environ"))
    result["processes"] = attempt(processes)
    for path in targets["worker_files"]:
        result[f"read {path}"] = attempt(lambda p=path: read(p))
    for path in targets["outside"]:
        result[f"write {path}"] = attempt(lambda p=path: write(p))
    result["fork"] = attempt(lambda: fork_bomb(targets["forks"]))
    result["uid"] = {"ok": [os.getuid(), os.geteuid()]}
    (folder / "result.json").write_text(json.dumps(result))
    chunk = b"x" * (1 << 20)
    for _ in range(targets["print_bytes"] >> 20):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
