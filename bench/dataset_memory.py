"""Memory of a QAT run as its dataset grows: mapped from disk (what jobs do) against read into memory.

For each size an ``.npz`` of float32 rows (3072 features, labels for 10 classes, a fixed
2000-row eval split) is written, and a fresh process runs the whole of a job's pipeline on
it (load, calibrate, one epoch of QAT at batch 50, export, score) with a small MLP, once
with the arrays mapped (``load_dataset(..., scratch)``, as the worker and ``qat quantize``
load) and once read into memory. A thread samples ``/proc/self/status`` every 20 ms:
``RssAnon`` is the process's own memory (what an out-of-memory kill is about; mapped file
pages are page cache the kernel can drop), ``VmRSS`` adds the resident pages of mapped
files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FEATURES = 3072
EVAL_ROWS = 2000
FULL_GIB = (0.25, 0.5, 1.0, 2.0)
QUICK_GIB = (0.125, 0.25, 0.5)

# run in a fresh interpreter: argv = model, data, scratch folder or "-", out folder
_CHILD = """
import json, sys, threading, time
from pathlib import Path

peaks = {"RssAnon": 0, "VmRSS": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in peaks:
                peaks[key] = max(peaks[key], int(value.split()[0]))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

import torch
torch.set_num_threads(1)
from quantlib.data import load_dataset
from quantlib.modelfile import load_exported_program
from quantlib.run import run_qat
from quantlib.spec import QATSpec

model, data, scratch, out = sys.argv[1:5]
started = time.perf_counter()
dataset = load_dataset(data, scratch=None if scratch == "-" else Path(scratch))
run_qat(load_exported_program(model), dataset, out, spec=QATSpec(epochs=1, batch_size=50))
time.sleep(0.05)
print(json.dumps({
    "peak_anon_mib": round(peaks["RssAnon"] / 1024, 1),
    "peak_rss_mib": round(peaks["VmRSS"] / 1024, 1),
    "seconds": round(time.perf_counter() - started, 1),
}))
"""


def _mlp_program(folder: Path) -> Path:
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, FEATURES),), dynamic_shapes=({0: batch},))
    path = folder / "mlp.pt2"
    torch.export.save(program, path)
    return path


def _write_dataset(path: Path, gib: float) -> int:
    """Rows whose class shows in their mean (so the numbers mean something), written a block at a time."""
    rows = int(gib * (1 << 30)) // (FEATURES * 4)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, rows)
    x_train = np.lib.format.open_memmap(path.with_suffix(".x.npy"), mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    for start in range(0, rows, 20_000):
        block = labels[start : start + 20_000]
        x_train[start : start + len(block)] = rng.standard_normal((len(block), FEATURES), np.float32) + block[:, None]
    eval_labels = rng.integers(0, 10, EVAL_ROWS)
    x_eval = (rng.standard_normal((EVAL_ROWS, FEATURES), np.float32) + eval_labels[:, None]).astype(np.float32)
    np.savez(path, x_train=x_train, y_train=labels, x_eval=x_eval, y_eval=eval_labels)
    del x_train
    path.with_suffix(".x.npy").unlink()
    return rows


def _run(model: Path, data: Path, scratch: Path | None, out: Path) -> dict[str, Any]:
    argv = [sys.executable, "-c", _CHILD, str(model), str(data), str(scratch) if scratch else "-", str(out)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1][:200] if run.stderr.strip() else f"exit {run.returncode}"}
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def measure(quick: bool, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="qat-bench-memory-") as tmp:
        folder = Path(tmp)
        model = _mlp_program(folder)
        for gib in QUICK_GIB if quick else FULL_GIB:
            data = folder / "data.npz"
            samples = _write_dataset(data, gib)
            for variant, scratch in (("mapped (jobs)", folder / "scratch"), ("read into memory", None)):
                row = {"dataset_gib": gib, "train_rows": samples, "variant": variant}
                row |= _run(model, data, scratch, folder / "out")
                log(f"dataset memory {row}")
                rows.append(row)
            data.unlink()
    return rows
